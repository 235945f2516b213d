"""The manifest and rejection tables: one row per stored sample / per refused input.

pyarrow writes them with a fixed schema and row order, so the same build gives the same
Parquet bytes; the dataset card, the RepMix CSVs and the scorer all read from the manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from benchmark.atomic import atomic_path
from benchmark.protocol import CLEAN, REAL
from benchmark.shards import shard_name

if TYPE_CHECKING:
    from benchmark.records import ImageBatch, Placement

def _column(arrow_type: pa.DataType, doc: str) -> Any:
    return field(metadata={"arrow": arrow_type, "doc": doc})


@dataclass(frozen=True)
class SampleRecord:
    """One stored sample's provenance: a manifest.parquet row and its shard's KEY.json.

    The manifest schema is declared here, once (MANIFEST_SCHEMA is read off these fields, and
    the dataset card's and croissant.json's column descriptions are their `doc`), and a record
    is made only by its constructors: `clean` when a kept image is materialized, then
    `corrupted` when its split draws a corruption.
    """

    key: str = _column(pa.string(), "unique sample key: source-semantic-sNNNNNNNN, or "
                                    "real-semantic-<photo path>; the shard member's name")
    split: str = _column(pa.string(), "train, val or test")
    source: str = _column(pa.string(), "class name: real, or the generator source")
    label: int = _column(pa.int32(), "class index (classes.json order), real = 0")
    semantic: str = _column(pa.string(), "semantic set (image domain), e.g. celeba")
    semantic_label: int = _column(pa.int32(), "semantic index, seen semantics first "
                                              "(classes.json; the RepMix CSVs' dlabel)")
    seen: bool = _column(pa.bool_(), "the semantic is seen in training")
    generator: str = _column(pa.string(), "architecture that made the image; photo for real")
    checkpoint_sha256: str = _column(pa.string(), "sha256 of the generator weights (or of a "
                                                  "folder source's listing); empty for real")
    sample_index: int = _column(pa.int64(), "index of a sampled image in its (source, semantic) "
                                            "cell, a folder source's file index; -1 for real")
    latent_seed: int = _column(pa.int64(), "seed the image was drawn with "
                                           "(benchmark.keys.latent_seed); -1 for real")
    origin: str = _column(pa.string(), "photo path inside its semantic folder; empty for "
                                       "sampled images")
    cluster: int = _column(pa.int32(), "K-means cluster of the quality selection; -1 where no "
                                       "clustering applies")
    distance: float | None = _column(pa.float64(), "selection distance: feature distance to "
                                                   "the nearest real reference photo; null for real")
    filled: bool = _column(pa.bool_(), "kept by topping up a cluster short of its quota")
    corruption: str = _column(pa.string(), "ImageNet-C corruption stored in the image; none "
                                           "when clean")
    severity: int = _column(pa.int32(), "corruption severity 1..5; 0 when clean")
    corruption_seen: bool = _column(pa.bool_(), "the corruption is one training applies "
                                                "(true when clean)")
    corruption_seed: int = _column(pa.int64(), "seed of the corruption's random draws; 0 when "
                                               "clean")
    shard: str = _column(pa.string(), "tar shard holding the sample, e.g. test-000003.tar")
    position: int = _column(pa.int32(), "index of the sample inside its shard")
    sha256: str = _column(pa.string(), "sha256 of the stored PNG bytes")
    png_bytes: int = _column(pa.int64(), "size of the stored PNG in bytes")

    @classmethod
    def clean(cls, placement: "Placement", batch: "ImageBatch", index: int, *, label: int,
              semantic_label: int, seen: bool) -> "SampleRecord":
        """The record of image `index` of `batch`, kept at `placement`, stored clean."""
        png = batch.pngs[index]
        real = placement.source == REAL
        return cls(
            key=placement.key, split=placement.split, source=placement.source, label=label,
            semantic=placement.semantic, semantic_label=semantic_label, seen=seen,
            generator=batch.generator, checkpoint_sha256=batch.checkpoint_sha256,
            sample_index=-1 if real else int(batch.ranks[index]),
            latent_seed=-1 if real else int(batch.latent_seeds[index]),
            origin=batch.origins[index] if real else "", cluster=placement.cluster,
            distance=None if math.isnan(placement.distance) else placement.distance,
            filled=placement.filled, corruption=CLEAN, severity=0, corruption_seen=True,
            corruption_seed=0, shard=shard_name(placement.split, placement.shard),
            position=placement.position, sha256=hashlib.sha256(png).hexdigest(),
            png_bytes=len(png))

    def corrupted(self, name: str, severity: int, seed: int, *, seen: bool, png: bytes) -> "SampleRecord":
        """This record after corruption `name` at `severity` made `png` of the image."""
        return dataclasses.replace(self, corruption=name, severity=severity, corruption_seen=seen,
                                   corruption_seed=seed, sha256=hashlib.sha256(png).hexdigest(),
                                   png_bytes=len(png))

    def row(self) -> dict[str, Any]:
        """The record as a manifest row / KEY.json object, in schema order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class StoredSample:
    """A kept image on its way to a shard: its PNG and its record."""

    record: SampleRecord
    png: bytes

    @property
    def key(self) -> str:
        return self.record.key


MANIFEST_SCHEMA = pa.schema([(f.name, f.metadata["arrow"]) for f in fields(SampleRecord)])
# What each manifest column holds, in schema order.
MANIFEST_DOCS = {f.name: f.metadata["doc"] for f in fields(SampleRecord)}

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


def write_manifest(rows: Iterable[SampleRecord | dict[str, Any]], path: str | Path) -> pa.Table:
    """manifest.parquet from SampleRecords (or rows with exactly their fields)."""
    rows = [r.row() if isinstance(r, SampleRecord) else r for r in rows]
    return write_table(rows, MANIFEST_SCHEMA, path, ("split", "shard", "position"))


def write_rejections(rows: Iterable[dict[str, Any]], path: str | Path) -> pa.Table:
    return write_table(rows, REJECTION_SCHEMA, path, ("semantic", "source", "key", "stage"))


def read_manifest(path: str | Path) -> pa.Table:
    return pq.read_table(path, schema=MANIFEST_SCHEMA)
