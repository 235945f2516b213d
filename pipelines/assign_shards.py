"""AssignShards: order each split's keys by hash and cut them into fixed-size shards.

Only keys and small provenance travel through this global step; pixels stay in their chunks
and meet their placement again by chunk id.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from benchmark.splits import assign_shards


def _place_split(element, seed: int, max_samples: int):
    split, placements = element
    placements = list(placements)
    unique = {p.key: p for p in placements}
    if len(unique) != len(placements):  # keys are unique by construction: this is a bug upstream
        raise RuntimeError(f"split {split}: {len(placements) - len(unique)} duplicate keys")
    where = assign_shards(sorted(unique), seed, max_samples)
    for key, p in unique.items():
        yield p.chunk_id, dataclasses.replace(p, shard=where[key].shard, position=where[key].position)


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
