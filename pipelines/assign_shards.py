"""AssignShards: order each split's keys by hash and cut them into fixed-size shards.

Only keys and small provenance travel through this global step; pixels stay in their chunks
and meet their placement again by chunk id.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from benchmark.keys import check_unique
from benchmark.splits import assign_shards


def _place_split(element, seed: int, max_samples: int):
    split, placements = element
    placements = list(placements)
    # Every key of the split meets here: the build's one duplicate check (DuplicateKeyError).
    check_unique([p.key for p in placements], f"split {split}")
    where = assign_shards(sorted(p.key for p in placements), seed, max_samples)
    for p in placements:
        yield p.chunk_id, dataclasses.replace(p, shard=where[p.key].shard, position=where[p.key].position)


class AssignShards(beam.PTransform):
    """Placement -> (chunk_id, Placement with shard and position)."""

    def __init__(self, seed: int, max_samples: int):
        super().__init__()
        self._seed = seed
        self._max_samples = max_samples

    def expand(self, placements):
        return (placements
                | "KeyBySplit" >> beam.Map(lambda p: (p.split, p))
                | "GroupSplit" >> beam.GroupByKey()
                | "CutShards" >> beam.FlatMap(_place_split, self._seed, self._max_samples))
