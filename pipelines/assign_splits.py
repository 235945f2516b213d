"""AssignSplits: per cell, exact train/val/test counts decided by a hash of each key."""

from __future__ import annotations

import dataclasses

import apache_beam as beam

from benchmark.config import SplitsSpec
from benchmark.splits import assign_splits


def _split_cell(element, counts: dict[str, int], seed: int):
    cell, placements = element
    split_of = assign_splits([p.key for p in placements], counts, seed)
    for p in placements:
        yield dataclasses.replace(p, split=split_of[p.key])


class AssignSplits(beam.PTransform):
    """(cell, [Placement]) -> Placement with its split."""

    def __init__(self, spec: SplitsSpec, seed: int):
        super().__init__()
        self._counts = spec.counts()
        self._seed = seed

    def expand(self, cells):
        return cells | "SplitCell" >> beam.FlatMap(_split_cell, self._counts, self._seed)
