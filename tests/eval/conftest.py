"""A fake benchmark folder for the scorer's tests: a manifest written by write_manifest and a
classes.json, with seen/unseen semantics, seen/unseen corruptions and several severities."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmark.manifest import MANIFEST_SCHEMA, write_manifest

CLASSES = ["real", "sngan", "progan"]
CORRUPTIONS = ["fog", "glass_blur"]  # glass_blur plays the unseen corruption


def make_benchmark(folder: Path, test_rows: int, val_rows: int = 3, seed: int = 0) -> Path:
    """`test_rows` + `val_rows` manifest rows over CLASSES; half the test rows corrupted."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(test_rows + val_rows):
        label = i % len(CLASSES)
        corrupted = i % 2 == 1
        corruption = CORRUPTIONS[int(rng.integers(0, 2))] if corrupted else "none"
        row = {n: None for n in MANIFEST_SCHEMA.names}
        row.update(key=f"{CLASSES[label]}-faces-s{i:08d}",
                   split="test" if i < test_rows else "val", label=label, source=CLASSES[label],
                   seen=bool(rng.random() < 0.5), corruption=corruption,
                   severity=int(rng.integers(1, 6)) if corrupted else 0,
                   corruption_seen=corruption != "glass_blur", shard="test-000000.tar", position=i)
        rows.append(row)
    write_manifest(rows, folder / "manifest.parquet")
    (folder / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    return folder


def truth_rows(bench: Path, split: str = "test") -> list[dict]:
    return [r for r in pq.read_table(bench / "manifest.parquet").to_pylist() if r["split"] == split]


@pytest.fixture
def bench(tmp_path) -> Path:
    """12 rows: 9 test, 3 val."""
    folder = tmp_path / "bench"
    folder.mkdir()
    return make_benchmark(folder, 9)


@pytest.fixture
def bench300(tmp_path) -> Path:
    folder = tmp_path / "bench300"
    folder.mkdir()
    return make_benchmark(folder, 300, seed=1)
