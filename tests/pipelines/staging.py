"""A build's staging folder as the Beam pipeline leaves it, made without running Beam.

Two classes (real, sngan) x two semantics x splits 2/1/1: 16 samples in one shard per split,
so the driver's last step (`_finalize`: count checks, dataset_info.json, config.json) runs on
it in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.config import BuildConfig
from benchmark.images import encode_png
from benchmark.manifest import write_manifest, write_rejections
from benchmark.shards import ShardSample, shard_name, write_shard


def tiny_config(root: Path, **corruptions) -> BuildConfig:
    for semantic in ("faces", "rooms"):
        (root / "photos" / semantic).mkdir(parents=True, exist_ok=True)
    return BuildConfig.model_validate({
        "seed": 3, "output_dir": str(root / "out"), "resolution": 32,
        "semantics": {"faces": {"path": str(root / "photos" / "faces"), "seen": True},
                      "rooms": {"path": str(root / "photos" / "rooms"), "seen": False}},
        "sources": {"sngan": {"generator": "sngan", "train": {"steps": 1}}},
        "sampling": {"per_model": 4},
        "features": {"inception": {"weights": "random"}},
        "selection": {"clusters": 1, "per_cluster": 4},
        "splits": {"train": 2, "val": 1, "test": 1},
        "corruptions": corruptions,
    })


def manifest_rows(cfg: BuildConfig) -> list[dict]:
    """One row per sample, every (class, semantic, split) cell at its configured count."""
    rows = []
    for label, source in enumerate(cfg.classes):
        for semantic_label, (semantic, spec) in enumerate(cfg.semantics.items()):
            splits = [s for s, n in cfg.splits.counts().items() for _ in range(n)]
            for i, split in enumerate(splits):
                real = source == "real"
                rows.append({
                    "key": f"real-{semantic}-{i:05d}" if real else f"{source}-{semantic}-s{i:08d}",
                    "split": split, "source": source, "label": label, "semantic": semantic,
                    "semantic_label": semantic_label, "seen": spec.seen,
                    "generator": "photo" if real else source,
                    "checkpoint_sha256": "" if real else "ab" * 32,
                    "sample_index": -1 if real else i, "latent_seed": -1 if real else 1000 + i,
                    "origin": f"{i:05d}.jpg" if real else "",
                    "cluster": -1 if real else 0, "distance": None if real else 0.5, "filled": False,
                    "corruption": "none", "severity": 0, "corruption_seen": True, "corruption_seed": 0,
                    "shard": "", "position": 0, "sha256": "", "png_bytes": 0,
                })
    return rows


def stage(staging: Path, rows: list[dict]) -> None:
    """Write shards, manifest and an empty rejection table for `rows` as the pipeline would."""
    staging.mkdir(parents=True, exist_ok=True)
    png = encode_png(np.full((32, 32, 3), 128, np.uint8))
    for split in ("train", "val", "test"):
        mine = [r for r in rows if r["split"] == split]
        for position, row in enumerate(mine):
            row.update(shard=shard_name(split, 0), position=position)
        keys = sorted({r["key"] for r in mine})  # a shard refuses a doubled key; a manifest does not
        if keys:
            write_shard(staging / shard_name(split, 0), [ShardSample(k, png, {}) for k in keys])
    write_manifest(rows, staging / "manifest.parquet")
    write_rejections([], staging / "rejections.parquet")
