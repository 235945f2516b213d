"""A built benchmark in miniature (shards, manifest, RepMix CSVs), for the RepMix tests."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from benchmark.images import encode_png
from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from benchmark.repmix import semantic_labels, write_repmix_csvs
from benchmark.shards import ShardSample, shard_name, write_shard

# Unseen semantics listed first on purpose: the index must still put the seen ones first.
SEMANTICS = {"rooms": False, "faces": True, "cats": False, "birds": True}
CLASSES = ("real", "sngan")
SPLITS = ("train", "val", "test")


def png_of(i: int) -> bytes:
    return encode_png(np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def _row(key, split, source, semantic, shard, position, png):
    row = {name: None for name in MANIFEST_SCHEMA.names}
    row.update(key=key, split=split, source=source, label=CLASSES.index(source),
               semantic=semantic, semantic_label=semantic_labels(SEMANTICS)[semantic],
               seen=SEMANTICS[semantic], shard=shard, position=position,
               sha256=hashlib.sha256(png).hexdigest(), png_bytes=len(png))
    return row


def tiny_benchmark(out: Path, per_cell: int = 2, per_shard: int = 5) -> Path:
    """A built-benchmark folder in miniature: shards, manifest, RepMix CSVs."""
    rows, i = [], 0
    for split in SPLITS:
        samples = []
        for source in CLASSES:
            for semantic in SEMANTICS:
                for _ in range(per_cell):
                    samples.append(ShardSample(f"{source}-{semantic}-s{i:08d}", png_of(i), {}))
                    i += 1
        for start in range(0, len(samples), per_shard):
            shard = shard_name(split, start // per_shard)
            chunk = samples[start:start + per_shard]
            write_shard(out / shard, chunk)
            for pos, s in enumerate(chunk):
                source, semantic, _ = s.key.split("-")
                rows.append(_row(s.key, split, source, semantic, shard, pos, s.png))
    manifest = write_manifest(rows, out / "manifest.parquet")
    write_repmix_csvs(out / "repmix", manifest, SEMANTICS)
    return out


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
