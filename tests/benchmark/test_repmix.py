"""The RepMix interface: CSVs the released loader reads, and the export of their images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.dataset_files import write_classes
from benchmark.manifest import read_manifest
from benchmark.repmix import ExportError, export_split, semantic_labels, write_repmix_csvs
from benchmark.shards import ShardSample, write_shard
from tests.benchmark.tiny_repmix import CLASSES, SEMANTICS, SPLITS, csv_rows, png_of, tiny_benchmark


@pytest.fixture
def bench(tmp_path) -> Path:
    return tiny_benchmark(tmp_path / "out")


def test_semantic_index_puts_seen_first_in_config_order():
    assert semantic_labels(SEMANTICS) == {"faces": 0, "birds": 1, "rooms": 2, "cats": 3}
    assert semantic_labels({"a": True, "b": True}) == {"a": 0, "b": 1}


def test_dlabel_is_the_semantic_index_and_seen_ones_come_first(bench):
    manifest = read_manifest(bench / "manifest.parquet").to_pylist()
    semantic_of = {r["key"]: r["semantic"] for r in manifest}
    rows = csv_rows(bench / "repmix" / "test.csv")
    assert list(rows[0]) == ["path", "label", "dlabel"]
    for r in rows:
        key = r["path"].removeprefix("test/").removesuffix(".png")
        semantic = semantic_of[key]
        assert int(r["dlabel"]) == semantic_labels(SEMANTICS)[semantic]
        assert int(r["label"]) == CLASSES.index(key.split("-")[0])
        # the released analyse_semantic: dlabel in range(nseen) means seen
        assert (int(r["dlabel"]) < 2) == SEMANTICS[semantic]


def test_train_and_val_csvs_hold_seen_semantics_only_test_all(bench):
    manifest = read_manifest(bench / "manifest.parquet").to_pylist()
    for split in SPLITS:
        listed = {r["path"] for r in csv_rows(bench / "repmix" / f"{split}.csv")}
        keep = [m for m in manifest if m["split"] == split and (split == "test" or m["seen"])]
        assert listed == {f"{split}/{m['key']}.png" for m in keep}
    dlabels = {int(r["dlabel"]) for r in csv_rows(bench / "repmix" / "train.csv")}
    assert dlabels == {0, 1}
    test_semantics = {int(r["dlabel"]) for r in csv_rows(bench / "repmix" / "test.csv")}
    assert test_semantics == {0, 1, 2, 3}


def test_a_manifest_semantic_missing_from_the_config_is_named(bench, tmp_path):
    manifest = read_manifest(bench / "manifest.parquet")
    with pytest.raises(ValueError, match="semantic 'cats' is not in the config"):
        write_repmix_csvs(tmp_path / "csv", manifest, {"rooms": False, "faces": True, "birds": True})


def test_classes_json_lists_semantics_in_label_order(tmp_path):
    for s in SEMANTICS:
        (tmp_path / s).mkdir()
    semantics = "".join(f"  {s}: {{path: {s}, seen: {str(v).lower()}}}\n" for s, v in SEMANTICS.items())
    (tmp_path / "cfg.yaml").write_text(
        "output_dir: out\nsemantics:\n" + semantics
        + "sources:\n  sngan: {generator: sngan, train: {steps: 2}}\n"
        "sampling: {per_model: 40}\nfeatures: {inception: {weights: random}}\n"
        "selection: {clusters: 2, per_cluster: 5}\nsplits: {train: 6, val: 2, test: 2}\n")
    write_classes(tmp_path / "classes.json", load_config(tmp_path / "cfg.yaml"))
    data = json.loads((tmp_path / "classes.json").read_text())
    assert data["classes"] == ["real", "sngan"]
    assert data["semantics"] == [{"name": "faces", "label": 0, "seen": True},
                                 {"name": "birds", "label": 1, "seen": True},
                                 {"name": "rooms", "label": 2, "seen": False},
                                 {"name": "cats", "label": 3, "seen": False}]


# ----------------------------------------------------------------------------- export


def test_export_writes_exactly_the_csv_paths_with_the_shard_bytes(bench):
    manifest = {r["key"]: r for r in read_manifest(bench / "manifest.parquet").to_pylist()}
    dest = bench / "repmix"
    for split in SPLITS:
        stats = export_split(bench, split)
        listed = [r["path"] for r in csv_rows(bench / "repmix" / f"{split}.csv")]
        assert stats.written == len(listed) and stats.present == 0
        written = sorted(str(p.relative_to(dest)) for p in (dest / split).iterdir())
        assert written == sorted(listed)
        for path in listed:  # what the released loader opens: os.path.join(data_dir, path)
            key = Path(path).stem
            assert hashlib.sha256((dest / path).read_bytes()).hexdigest() == manifest[key]["sha256"]
            assert (dest / path).read_bytes() == png_of(int(key.rsplit("-s", 1)[1]))
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]


def test_export_again_writes_nothing_and_keeps_the_files(bench, tmp_path):
    first = export_split(bench, "test", tmp_path / "dest")
    before = {p: p.stat().st_mtime_ns for p in first.folder.iterdir()}
    again = export_split(bench, "test", tmp_path / "dest")
    assert (again.written, again.present) == (0, first.written)
    assert {p: p.stat().st_mtime_ns for p in again.folder.iterdir()} == before


def test_export_refuses_to_overwrite_a_different_file(bench, tmp_path):
    dest = tmp_path / "dest"
    key = csv_rows(bench / "repmix" / "val.csv")[1]["path"]
    (dest / "val").mkdir(parents=True)
    (dest / key).write_bytes(b"someone else's image")
    with pytest.raises(ExportError, match=f"{dest / key} exists with other content"):
        export_split(bench, "val", dest)
    assert [p.name for p in (dest / "val").iterdir()] == [Path(key).name]
    assert (dest / key).read_bytes() == b"someone else's image"
    assert sorted(p.name for p in dest.iterdir()) == ["val"]


def test_export_refuses_a_damaged_member_and_leaves_nothing(bench, tmp_path):
    manifest = read_manifest(bench / "manifest.parquet").to_pylist()
    victim = [r for r in manifest if r["split"] == "test" and r["shard"] == "test-000001.tar"]
    # The shard rewritten with one payload changed: valid tar, wrong bytes for that member.
    samples = [ShardSample(r["key"], png_of(10_000) if r is victim[2] else
                           png_of(int(r["key"].rsplit("-s", 1)[1])), {}) for r in victim]
    write_shard(bench / "test-000001.tar", samples)
    dest = tmp_path / "dest"
    with pytest.raises(ExportError, match=rf"test-000001.tar: member {victim[2]['key']}.png has "
                                          r"sha256 [0-9a-f]{64}, the manifest says"):
        export_split(bench, "test", dest)
    assert list(dest.iterdir()) == []  # no split folder, no hidden partial folder


def test_export_names_a_member_missing_from_its_shard(bench, tmp_path):
    manifest = read_manifest(bench / "manifest.parquet").to_pylist()
    members = [r for r in manifest if r["shard"] == "test-000000.tar"]
    kept = [ShardSample(r["key"], png_of(int(r["key"].rsplit("-s", 1)[1])), {}) for r in members[:-1]]
    write_shard(bench / "test-000000.tar", kept)
    with pytest.raises(ExportError, match=rf"test-000000.tar: 1 samples the manifest places there "
                                          rf"are missing, e.g. {members[-1]['key']}.png"):
        export_split(bench, "test", tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_export_names_a_missing_shard_and_a_truncated_one(bench, tmp_path):
    (bench / "test-000002.tar").unlink()
    with pytest.raises(ExportError, match=r"test-000002.tar not found \(named by the manifest"):
        export_split(bench, "test", tmp_path / "a")
    data = (bench / "val-000000.tar").read_bytes()
    (bench / "val-000000.tar").write_bytes(data[:700])
    with pytest.raises(ExportError, match="val-000000.tar"):
        export_split(bench, "val", tmp_path / "b")
    assert not (tmp_path / "a" / "test").exists() and not (tmp_path / "b" / "val").exists()


@pytest.mark.parametrize("line, message", [
    ("val/real-faces-s00000001.png,0,0",
     r"test.csv:2: path 'val/real-faces-s00000001.png' is not test/KEY.png"),
    ("test/../x.png,0,0", r"is not test/KEY.png"),
    ("test/nosuchkey.png,0,0", r"test/nosuchkey.png is not a test sample of"),
])
def test_export_refuses_a_csv_row_that_is_not_a_sample_of_the_split(bench, tmp_path, line, message):
    path = bench / "repmix" / "test.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], line, *lines[1:]]) + "\n")
    with pytest.raises(ExportError, match=message):
        export_split(bench, "test", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_export_of_a_folder_without_a_manifest_says_so(tmp_path):
    with pytest.raises(ExportError, match="manifest.parquet not found"):
        export_split(tmp_path, "test")
