"""The built folder is a dataset every loader opens: Hugging Face `datasets` (from the folder and
from its tars), Croissant (structure always; the format's own validator, mlcroissant, when
installed), the card's rebuild command and figures. Nothing is downloaded: offline, caches in
tmp."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from benchmark.config import load_config
from benchmark.croissant import CROISSANT
from benchmark.dataset_card import CANONICAL_COMMAND
from benchmark.dataset_files import read_pngs
from benchmark.images import decode_image
from benchmark.manifest import MANIFEST_SCHEMA
from tests.pipelines.test_build_e2e import built, photo_config  # noqa: F401 (fixtures)

SPLITS = {"train": 24, "val": 8, "test": 8}


def _manifest(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}


def _stored(out: Path, rows: dict[str, dict]) -> dict[str, np.ndarray]:
    pngs = read_pngs(out, [(r["shard"], k) for k, r in rows.items()])
    return {k: decode_image(v) for k, v in pngs.items()}


@pytest.fixture
def hf(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed "
                                   "(requirements.txt pins it)")
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets.disable_progress_bars()
    return datasets


def _check_hf_split(ds, split: str, manifest: dict[str, dict], stored: dict[str, np.ndarray]):
    assert ds.num_rows == SPLITS[split]
    assert sorted(ds.column_names) == ["__key__", "__url__", "json", "png"]
    for row in ds:
        key = row["__key__"]
        assert manifest[key]["split"] == split
        assert {k: row["json"][k] for k in MANIFEST_SCHEMA.names} == manifest[key]
        assert np.array_equal(np.asarray(row["png"].convert("RGB")), stored[key])


def test_load_dataset_on_the_folder_reads_the_cards_splits_features_and_counts(built, hf, tmp_path):
    manifest = _manifest(built)
    stored = _stored(built, manifest)
    ds = hf.load_dataset(str(built), cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == SPLITS
    features = ds["train"].features
    assert features["json"]["label"].names == ["real", "sngan"]
    assert features["json"]["semantic_label"].names == ["faces", "rooms"]
    assert features["json"]["distance"].dtype == "float64"
    assert isinstance(features["png"], hf.Image)
    for split in SPLITS:
        _check_hf_split(ds[split], split, manifest, stored)


def test_the_card_counts_are_checked_by_datasets(built, hf, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in built.glob("*.tar"):
        shutil.copy(p, copy)
    card = (built / "README.md").read_text().replace("num_examples: 24", "num_examples: 25")
    (copy / "README.md").write_text(card)
    with pytest.raises(hf.exceptions.NonMatchingSplitsSizesError):
        hf.load_dataset(str(copy), cache_dir=str(tmp_path / "cache"))


def test_load_dataset_webdataset_from_the_tars(built, hf, tmp_path):
    manifest = _manifest(built)
    stored = _stored(built, manifest)
    files = {s: sorted(str(p) for p in built.glob(f"{s}-*.tar")) for s in SPLITS}
    ds = hf.load_dataset("webdataset", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert {s: ds[s].num_rows for s in ds} == SPLITS
    for split in SPLITS:
        _check_hf_split(ds[split], split, manifest, stored)


def test_card_header_is_hub_metadata_and_its_command_rebuilds_this_config(built, tmp_path):
    text = (built / "README.md").read_text()
    head = yaml.safe_load(text.split("---\n")[1])
    assert head["license"] == "unknown" and head["task_categories"] == ["image-classification"]
    assert [d["path"] for d in head["configs"][0]["data_files"]] == [f"{s}-*.tar" for s in SPLITS]
    info = json.loads((built / "dataset_info.json").read_text())
    assert f"`{info['config_sha256']}`" in text and CANONICAL_COMMAND in text
    # The command's config is this build's: the same fingerprint from config.json alone.
    again = load_config(built / "config.json", output_dir=tmp_path / "OUT")
    assert again.fingerprint() == info["config_sha256"]
    assert "(selection-distances.png)" in text and (built / "selection-distances.png").is_file()
    with Image.open(built / "samples-test.png") as grid:
        assert grid.width > 4 * 128  # tiles enlarged so their captions fit


def test_croissant_lists_the_manifest_and_every_shard_with_its_hash(built):
    doc = json.loads((built / CROISSANT).read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0"
    objects = {d["contentUrl"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    shards = sorted({r["shard"] for r in _manifest(built).values()})
    assert list(objects) == ["manifest.parquet", *shards]
    for name, entry in objects.items():
        data = (built / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["contentSize"] == f"{len(data)} B"
    (samples,) = [r for r in doc["recordSet"] if r["name"] == "samples"]
    assert [f["name"] for f in samples["field"]] == [*MANIFEST_SCHEMA.names, "image"]


def test_mlcroissant_validates_and_reads_every_record_with_its_image(built, tmp_path, monkeypatch):
    monkeypatch.setenv("CROISSANT_CACHE", str(tmp_path / "croissant"))
    mlc = pytest.importorskip("mlcroissant", reason="mlcroissant, the Croissant validator, is "
                              "not installed (requirements.txt pins it)")
    from mlcroissant._src.operation_graph.operations import extract

    # It extracts tars into a cache keyed by the member's relative name: keep it in tmp.
    monkeypatch.setattr(extract, "EXTRACT_PATH",
                        type(extract.EXTRACT_PATH)(tmp_path / "croissant" / "extract"))
    dataset = mlc.Dataset(jsonld=built / CROISSANT)  # raises on any validation error
    issues = dataset.metadata.ctx.issues
    assert not issues.errors
    assert all("datePublished" in w for w in issues.warnings), issues.warnings  # left out: no date
    manifest = _manifest(built)
    stored = _stored(built, manifest)
    records = list(dataset.records("samples"))
    assert len(records) == len(manifest) == 40
    for record in records:
        values = {k.split("/", 1)[1]: v.decode() if isinstance(v, bytes) else v
                  for k, v in record.items()}
        key = values["key"]
        row = manifest[key]
        assert {c: values[c] for c in MANIFEST_SCHEMA.names if row[c] is not None} == \
            {c: v for c, v in row.items() if v is not None}
        image = values["image"]
        if not isinstance(image, Image.Image):
            image = Image.open(io.BytesIO(image))
        assert np.array_equal(np.asarray(image.convert("RGB")), stored[key])
    assert Counter(manifest[k]["split"] for k in manifest) == Counter(SPLITS)
