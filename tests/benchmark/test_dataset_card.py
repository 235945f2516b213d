"""The dataset card: Hub front matter, corruption x severity tables, what it says about the build."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest
import yaml

from benchmark.dataset_card import (CANONICAL_COMMAND, corruption_table, front_matter,
                                    hub_features, size_category, write_card)
from benchmark.manifest import MANIFEST_SCHEMA


def _manifest(rows: list[dict]) -> pa.Table:
    full = []
    for r in rows:
        row = {n: None for n in MANIFEST_SCHEMA.names}
        row.update(r)
        full.append(row)
    return pa.Table.from_pylist(full, schema=MANIFEST_SCHEMA)


def _cfg(**over):
    semantics = {"faces": SimpleNamespace(seen=True), "rooms": SimpleNamespace(seen=False)}
    base = dict(protocol="custom", classes=("real", "sngan"), semantics=semantics, resolution=32,
                selection=SimpleNamespace(extractor="inception"),
                fingerprint=lambda: "ab" * 32)
    base.update(over)
    return SimpleNamespace(**base)


ROWS = ([dict(key=f"real-faces-{i}", split="train", source="real", semantic="faces",
              corruption="none", severity=0, corruption_seen=True, png_bytes=100)
         for i in range(3)]
        + [dict(key="sngan-rooms-s1", split="val", source="sngan", semantic="rooms",
                corruption="fog", severity=2, corruption_seen=True, png_bytes=50),
           dict(key="sngan-rooms-s2", split="val", source="sngan", semantic="rooms",
                corruption="none", severity=0, corruption_seen=True, png_bytes=40),
           dict(key="sngan-faces-s1", split="test", source="sngan", semantic="faces",
                corruption="snow", severity=5, corruption_seen=False, png_bytes=60),
           dict(key="real-faces-9", split="test", source="real", semantic="faces",
                corruption="gaussian_noise", severity=1, corruption_seen=True, png_bytes=70),
           dict(key="real-rooms-9", split="test", source="real", semantic="rooms",
                corruption="snow", severity=5, corruption_seen=False, png_bytes=80)])


def test_hub_features_declare_every_manifest_column_and_the_class_names():
    features = hub_features(("real", "sngan"), ["faces", "rooms"])
    assert [f["name"] for f in features] == ["__key__", "__url__", "json", "png"]
    assert features[3] == {"name": "png", "dtype": "image"}
    struct = {f["name"]: f["dtype"] for f in features[2]["struct"]}
    assert list(struct) == MANIFEST_SCHEMA.names
    assert struct["label"] == {"class_label": {"names": {0: "real", 1: "sngan"}}}
    assert struct["semantic_label"] == {"class_label": {"names": {0: "faces", 1: "rooms"}}}
    assert (struct["key"], struct["distance"], struct["seen"], struct["latent_seed"],
            struct["severity"]) == ("string", "float64", "bool", "int64", "int32")


def test_a_column_type_without_a_hub_dtype_is_named():
    schema = pa.schema([("key", pa.string()), ("when", pa.timestamp("s"))])
    with pytest.raises(ValueError, match="'when'"):
        hub_features(("real",), ["faces"], schema)


@pytest.mark.parametrize("n, name", [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"),
                                     (1_056_000, "1M<n<10M"), (10**9, "n>100M")])
def test_size_category(n, name):
    assert size_category(n) == name


def test_front_matter_points_each_split_at_its_shards_and_counts_it():
    meta = yaml.safe_load(front_matter(_cfg(), _manifest(ROWS)))
    assert meta["license"] == "unknown" and meta["task_categories"] == ["image-classification"]
    assert meta["configs"] == [{"config_name": "default", "default": True, "data_files": [
        {"split": "train", "path": "train-*.tar"}, {"split": "val", "path": "val-*.tar"},
        {"split": "test", "path": "test-*.tar"}]}]
    assert meta["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": 300, "num_examples": 3},
        {"name": "val", "num_bytes": 90, "num_examples": 2},
        {"name": "test", "num_bytes": 210, "num_examples": 3}]
    # semantic labels: seen semantics first, whatever the config order
    cfg = _cfg(semantics={"rooms": SimpleNamespace(seen=False), "faces": SimpleNamespace(seen=True)})
    struct = yaml.safe_load(front_matter(cfg, _manifest(ROWS)))["dataset_info"]["features"][2]
    names = {f["name"]: f["dtype"] for f in struct["struct"]}["semantic_label"]
    assert names == {"class_label": {"names": {0: "faces", 1: "rooms"}}}


def test_a_split_without_samples_is_left_out():
    meta = yaml.safe_load(front_matter(_cfg(), _manifest([r for r in ROWS if r["split"] != "val"])))
    assert [d["split"] for d in meta["configs"][0]["data_files"]] == ["train", "test"]


def test_corruption_table_counts_each_severity_in_protocol_order():
    table = corruption_table(_manifest(ROWS), "test")
    assert table[2:] == [
        "| gaussian_noise | seen | 1 | 0 | 0 | 0 | 0 | 1 |",
        "| snow | unseen | 0 | 0 | 0 | 0 | 2 | 2 |",
        "| **all** | | 1 | 0 | 0 | 0 | 2 | 3 |"]
    val = corruption_table(_manifest(ROWS), "val")
    assert val[2:] == ["| fog | seen | 0 | 1 | 0 | 0 | 0 | 1 |",
                       "| clean | - |  |  |  |  |  | 1 |",
                       "| **all** | | 0 | 1 | 0 | 0 | 0 | 2 |"]
    assert corruption_table(_manifest(ROWS[:3]), "test") == []


def test_card_has_the_hub_header_the_figures_and_the_runnerless_command(tmp_path):
    path = tmp_path / "README.md"
    write_card(path, _cfg(), _manifest(ROWS), grids={"train": "samples-train.png"},
               histogram="selection-distances.png", rejected=0, features_weights="random")
    text = path.read_text()
    head, body = text.split("---\n", 2)[1:]
    assert yaml.safe_load(head)["dataset_info"]["splits"][0]["num_examples"] == 3
    assert "![train samples](samples-train.png)" in body
    assert "![selection distances](selection-distances.png)" in body
    assert "| snow | unseen | 0 | 0 | 0 | 0 | 2 | 2 |" in body
    assert f"`{'ab' * 32}`" in body and CANONICAL_COMMAND in body
    assert "--runner" not in CANONICAL_COMMAND and "--direct" not in CANONICAL_COMMAND
    assert 'open_benchmark("OUT")' in body and 'load_dataset("OUT")' in body


def test_card_without_distances_says_so(tmp_path):
    path = tmp_path / "README.md"
    write_card(path, _cfg(), _manifest(ROWS), grids={}, histogram=None, rejected=0,
               features_weights="random")
    assert "No sample records a selection distance." in path.read_text()
