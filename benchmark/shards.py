"""WebDataset shards, written deterministically and atomically.

webdataset's TarWriter does the tar layout (members `KEY.json`, `KEY.png`, sorted); we fix
what it would otherwise take from the environment (mtime, owner) and write through a
temporary name, so the same samples always give the same bytes and a crash leaves no shard.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import webdataset as wds

from benchmark.atomic import atomic_path
from benchmark.faults import fault_point
from benchmark.keys import check_unique

FIXED_MTIME = 0  # the Unix epoch: no build time leaks into the bytes


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:06d}.tar"


@dataclass(frozen=True)
class ShardSample:
    key: str
    png: bytes
    meta: dict[str, Any]  # JSON-serialisable provenance, stored as KEY.json


@dataclass(frozen=True)
class ShardStats:
    path: str
    samples: int
    bytes: int
    sha256: str


def encode_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_shard(path: str | Path, samples: Sequence[ShardSample]) -> ShardStats:
    """Write samples in the given order; refuse empty payloads, dotted or duplicate keys."""
    check_unique([s.key for s in samples], str(path))
    for s in samples:
        if not s.key or "." in s.key or "/" in s.key:
            raise ValueError(f"{path}: key {s.key!r} must be non-empty without '.' or '/'")
        if not isinstance(s.png, (bytes, bytearray)) or not s.png:
            raise ValueError(f"{path}: sample {s.key} has no PNG payload")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            with wds.TarWriter(stream, user="attribution88", group="attribution88",
                               mode=0o444, encoder=False, mtime=FIXED_MTIME) as writer:
                for s in samples:
                    writer.write({"__key__": s.key, "png": bytes(s.png), "json": encode_meta(s.meta)})
        data = tmp.read_bytes()
        fault_point("write_shards")  # test-only; a kill here leaves the temporary file alone
    return ShardStats(path=str(path), samples=len(samples), bytes=len(data),
                      sha256=hashlib.sha256(data).hexdigest())
