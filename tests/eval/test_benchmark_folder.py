"""open_benchmark: the one reader of a built folder, on a small folder written here."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import pytest

from benchmark.config import CorruptionSpec
from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from eval.benchmark_folder import BenchmarkError, SemanticInfo, open_benchmark
from eval.score import main as score_main

CLASSES = ["real", "sngan", "progan"]
# label order as the build writes it: seen semantics first
SEMANTICS = [{"name": "faces", "label": 0, "seen": True},
             {"name": "rooms", "label": 1, "seen": False}]
SHARDS = {"train": [f"train-{i:06d}.tar" for i in (3, 1, 0, 4, 2)], "val": ["val-000000.tar"],
          "test": ["test-000000.tar"]}


def _rows():
    rows = []
    for split, shards in SHARDS.items():
        for i in range(6):
            label = i % len(CLASSES)
            row = {n: None for n in MANIFEST_SCHEMA.names}
            row.update(key=f"{CLASSES[label]}-faces-{split}{i:04d}", split=split, label=label,
                       source=CLASSES[label], semantic="faces", semantic_label=0, seen=True,
                       corruption="none", severity=0, corruption_seen=True,
                       shard=shards[i % len(shards)], position=i // len(shards))
            rows.append(row)
    return rows


def _tar(path: Path) -> None:
    with tarfile.open(path, "w") as tar:
        tar.addfile(tarfile.TarInfo("placeholder.json"))


@pytest.fixture
def folder(tmp_path) -> Path:
    out = tmp_path / "bench"
    out.mkdir()
    write_manifest(_rows(), out / "manifest.parquet")
    (out / "classes.json").write_text(json.dumps({"classes": CLASSES,
                                                  "semantics": list(reversed(SEMANTICS))}))
    info = {"resolution": 64, "corruptions": {"apply_at": "resized_224", "unseen_set": "repmix"},
            "protocol": "attribution88"}
    (out / "dataset_info.json").write_text(json.dumps(info))
    for name in sorted({n for names in SHARDS.values() for n in names}):
        _tar(out / name)
    return out


def test_reads_classes_semantics_settings_and_identity(folder):
    bench = open_benchmark(str(folder))
    assert bench.path == folder and bench.classes == tuple(CLASSES)
    # sorted by label, whatever the file's order
    assert bench.semantics == (SemanticInfo("faces", 0, True), SemanticInfo("rooms", 1, False))
    assert bench.resolution == 64
    # the whole section, defaults filled in by the config schema
    want = CorruptionSpec(apply_at="resized_224").model_dump(mode="json")
    assert bench.corruption_settings == want
    digest = hashlib.sha256((folder / "manifest.parquet").read_bytes()).hexdigest()
    assert bench.manifest_sha256 == digest


def test_manifest_selects_columns_and_split(folder):
    bench = open_benchmark(folder)
    table = bench.manifest(["key", "label"], split="val")
    assert table.column_names == ["key", "label"]
    assert table.column("key").to_pylist() == [r["key"] for r in _rows() if r["split"] == "val"]
    assert bench.manifest().num_rows == 18
    assert bench.manifest(split="test").column_names == MANIFEST_SCHEMA.names
    assert bench.manifest(["split", "key"], split="train").column_names == ["split", "key"]
    with pytest.raises(BenchmarkError, match=r"manifest\.parquet: no column\(s\) \['nope'\]"):
        bench.manifest(["key", "nope"])


def test_shards_are_the_splits_tars_sorted(folder):
    bench = open_benchmark(folder)
    assert bench.shards("train") == [folder / f"train-{i:06d}.tar" for i in range(5)]
    assert bench.shards("test") == [folder / "test-000000.tar"]


def test_settings_fall_back_to_config_json(folder):
    (folder / "dataset_info.json").unlink()
    (folder / "config.json").write_text(json.dumps({"resolution": 32,
                                                    "corruptions": {"apply_at": "stored"}}))
    bench = open_benchmark(folder)
    assert bench.resolution == 32 and bench.corruption_settings["apply_at"] == "stored"
    assert bench.dataset_info == {}


def test_missing_folder(tmp_path):
    with pytest.raises(BenchmarkError, match="nowhere: no such benchmark folder"):
        open_benchmark(tmp_path / "nowhere")


@pytest.mark.parametrize("name", ["manifest.parquet", "classes.json"])
def test_missing_file_is_named(folder, name):
    (folder / name).unlink()
    with pytest.raises(BenchmarkError, match=f"{name} not found"):
        open_benchmark(folder)


@pytest.mark.parametrize("text, message", [
    ("{broken", "classes.json: not JSON"),
    ("[]", "classes.json: no class list"),
    ('{"classes": ["sngan", "real"]}', "classes.json: class 0 must be 'real'"),
    ('{"classes": ["real", "sngan", "sngan"]}', "classes.json: a class appears twice"),
])
def test_bad_classes_json(folder, text, message):
    (folder / "classes.json").write_text(text)
    with pytest.raises(BenchmarkError, match=message):
        open_benchmark(folder)


def test_bad_semantics_are_named_on_use(folder):
    (folder / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    bench = open_benchmark(folder)  # enough for the scorer
    with pytest.raises(BenchmarkError, match="classes.json: no 'semantics' list"):
        bench.semantics
    (folder / "classes.json").write_text(json.dumps(
        {"classes": CLASSES, "semantics": [{"name": "faces", "label": 1, "seen": True}]}))
    with pytest.raises(BenchmarkError, match=r"classes.json: semantic labels must be 0\.\.0"):
        open_benchmark(folder).semantics


def test_unreadable_dataset_info_is_named(folder):
    (folder / "dataset_info.json").write_text("{broken")
    with pytest.raises(BenchmarkError, match="dataset_info.json: not JSON"):
        open_benchmark(folder).resolution


@pytest.mark.parametrize("info, message", [
    ({}, "dataset_info.json: no 'resolution' \\(nor in config.json\\)"),
    ({"resolution": "64"}, "dataset_info.json: 'resolution' must be a positive integer"),
    ({"resolution": 0}, "dataset_info.json: 'resolution' must be a positive integer"),
])
def test_bad_resolution(folder, info, message):
    (folder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(BenchmarkError, match=message):
        open_benchmark(folder).resolution


def test_bad_corruption_section(folder):
    (folder / "dataset_info.json").write_text(json.dumps({"corruptions": {"apply_at": "gpu"}}))
    with pytest.raises(BenchmarkError, match="dataset_info.json: 'corruptions' is not"):
        open_benchmark(folder).corruption_settings


def test_split_without_shards(folder):
    bench = open_benchmark(folder)
    with pytest.raises(BenchmarkError, match="manifest.parquet: no 'extra' samples"):
        bench.shards("extra")
    (folder / "test-000000.tar").unlink()
    with pytest.raises(BenchmarkError, match=r"test shard\(s\) \['test-000000.tar'\] listed"):
        bench.shards("test")


def test_unreadable_manifest(folder):
    (folder / "manifest.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BenchmarkError, match="manifest.parquet: not a readable Parquet file"):
        open_benchmark(folder).manifest()


def test_the_scorer_reads_through_the_folder(folder, tmp_path, capsys):
    """Class 0 is checked by the reader alone: the scorer refuses such a folder because it
    loads classes through open_benchmark."""
    sub = tmp_path / "sub.csv"
    sub.write_text("key,pred\n" + "".join(f"{r['key']},{r['source']}\n"
                                          for r in _rows() if r["split"] == "test"))
    assert score_main(["--benchmark", str(folder), "--submission", str(sub),
                       "--bootstrap", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["benchmark"]["manifest_sha256"] == open_benchmark(folder).manifest_sha256
    assert report["benchmark"]["protocol"] == "attribution88"
    (folder / "classes.json").write_text(json.dumps({"classes": ["sngan", "real", "progan"]}))
    assert score_main(["--benchmark", str(folder), "--submission", str(sub)]) == 2
    assert "classes.json: class 0 must be 'real'" in capsys.readouterr().err
