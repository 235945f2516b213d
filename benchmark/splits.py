"""Split and shard assignment: exact counts, decided by a hash of each key.

The keys of a cell are ordered by a keyed hash and cut at the configured counts, so a key's
split depends on the seed and the set of keys, never on the order they arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.keys import check_unique, order_key
from benchmark.protocol import SPLIT_NAMES


def assign_splits(keys: list[str], counts: dict[str, int], seed: int) -> dict[str, str]:
    """Map each key to a split so that exactly counts[split] keys land in each."""
    check_unique(keys, "one cell")
    total = sum(counts[s] for s in SPLIT_NAMES)
    if len(keys) != total:
        raise ValueError(f"{len(keys)} keys for {total} split places")
    ordered = sorted(keys, key=lambda k: order_key(seed, "split", k))
    out, start = {}, 0
    for split in SPLIT_NAMES:
        for k in ordered[start:start + counts[split]]:
            out[k] = split
        start += counts[split]
    return out


@dataclass(frozen=True)
class ShardPlace:
    shard: int
    position: int  # index of the sample inside its shard


def assign_shards(keys: list[str], seed: int, max_samples: int) -> dict[str, ShardPlace]:
    """Order a split's keys by hash (mixing sources and semantics) and cut every max_samples."""
    check_unique(keys, "one split")
    ordered = sorted(keys, key=lambda k: order_key(seed, "shard", k))
    return {k: ShardPlace(i // max_samples, i % max_samples) for i, k in enumerate(ordered)}
