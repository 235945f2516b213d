"""The manifest and rejection tables: one row per stored sample / per refused input.

pyarrow writes them with a fixed schema and row order, so the same build gives the same
Parquet bytes; the dataset card, the RepMix CSVs and the scorer all read from the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from benchmark.atomic import atomic_path

MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("label", pa.int32()),  # class index, real = 0
    ("semantic", pa.string()),
    ("semantic_label", pa.int32()),  # seen semantics first (benchmark.repmix.semantic_labels)
    ("seen", pa.bool_()),  # semantic seen in training
    ("generator", pa.string()),  # architecture, `photo` for real
    ("checkpoint_sha256", pa.string()),  # weights (or folder listing) hash, "" for real
    # index of a sampled image in its cell (the key's sNNNNNNNN; a folder source's file index),
    # and the seed it was drawn with (keys.latent_seed); both -1 for real photos
    ("sample_index", pa.int64()),
    ("latent_seed", pa.int64()),
    ("origin", pa.string()),  # photo path inside its semantic folder, "" for sampled images
    ("cluster", pa.int32()),  # K-means cluster, -1 where no clustering applies
    ("distance", pa.float64()),  # feature distance to the nearest real reference, null for real
    ("filled", pa.bool_()),  # kept by topping up a short cluster
    ("corruption", pa.string()),  # `none` when clean
    ("severity", pa.int32()),  # 1..5, 0 when clean
    ("corruption_seen", pa.bool_()),  # corruption is in the training set (true when clean)
    ("corruption_seed", pa.int64()),
    ("shard", pa.string()),  # e.g. test-000003.tar
    ("position", pa.int32()),  # index inside the shard
    ("sha256", pa.string()),  # of the stored PNG bytes
    ("png_bytes", pa.int64()),
])

REJECTION_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("source", pa.string()),
    ("semantic", pa.string()),
    ("path", pa.string()),
    ("stage", pa.string()),
    ("reason", pa.string()),
])

SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def write_table(rows: Iterable[dict[str, Any]], schema: pa.Schema, path: str | Path,
                sort_by: tuple[str, ...]) -> pa.Table:
    """Validate rows against `schema`, sort them, and write Parquet atomically."""
    rows = list(rows)
    for i, row in enumerate(rows):
        if set(row) != set(schema.names):
            missing, extra = set(schema.names) - set(row), set(row) - set(schema.names)
            raise ValueError(f"{path}: row {i} ({row.get('key')}): missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
    rows.sort(key=lambda r: tuple(SPLIT_ORDER.get(r[c], r[c]) if c == "split" else r[c] for c in sort_by))
    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table


def write_manifest(rows: Iterable[dict[str, Any]], path: str | Path) -> pa.Table:
    return write_table(rows, MANIFEST_SCHEMA, path, ("split", "shard", "position"))


def write_rejections(rows: Iterable[dict[str, Any]], path: str | Path) -> pa.Table:
    return write_table(rows, REJECTION_SCHEMA, path, ("semantic", "source", "key", "stage"))


def read_manifest(path: str | Path) -> pa.Table:
    return pq.read_table(path, schema=MANIFEST_SCHEMA)
