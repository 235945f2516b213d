"""CachedStage: run a stage only on the elements whose output the resume store lacks.

    elements -> LookUpCache -> hit:  the stored output ------------------------------> Flatten
                            -> miss: claim its key -> the wrapped stage -> StoreOutput -^

Each output is stored as soon as it is made, in the same fused step, so a build killed midway
keeps every chunk finished before the kill. The wrapped stage must give one output per input,
with the input's chunk id (the rules object says how to read both: see benchmark.chunk_cache).
Hits and computed outputs are the same values, so what follows cannot tell them apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apache_beam as beam

from benchmark.chunk_cache import ChunkStore, CorruptEntry
from benchmark.faults import fault_point
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)

CACHE_DIR = "cache"  # in the staging folder; removed before the folder becomes OUT


@dataclass(frozen=True)
class ResumeCache:
    """Where a build keeps work for a rerun after a crash (STAGING/cache), and which stages'."""
    root: str
    stages: frozenset[str]  # rules.stage of each stage kept (write_shards: completion records)

    def store(self, stage: str) -> str | None:
        """The store folder of `stage`; None when its work is not kept."""
        return f"{self.root}/{stage}" if stage in self.stages else None


class _LookUpFn(beam.DoFn):
    def __init__(self, root: str, rules, meter: Meter):
        self._meter = meter
        self._root = root
        self._rules = rules

    def setup(self):
        self._store = ChunkStore(self._root)

    def process(self, element):
        rules = self._rules
        if not rules.cacheable(element):
            yield False, element
            return
        key = rules.key(element)
        try:
            payload = self._store.get(key)
            output = None if payload is None else rules.decode(payload)
        except CorruptEntry as exc:
            log.warning("recomputing %s: %s", rules.input_id(element), exc)
            self._meter.count("cache_rejected")
            output = None
        if output is not None and rules.output_id(output) == rules.input_id(element):
            self._meter.count(f"{rules.counter}_from_cache", rules.count(output))
            yield True, output
            return
        self._store.claim(rules.input_id(element), key)
        yield False, element


class _StoreFn(beam.DoFn):
    def __init__(self, root: str, rules):
        self._root = root
        self._rules = rules

    def setup(self):
        self._store = ChunkStore(self._root)

    def process(self, output):
        key = self._store.claimed(self._rules.output_id(output))
        if key is not None:  # none for what the rules do not cache
            self._store.put(key, self._rules.encode(output))
            fault_point(self._rules.stage)
        yield output


class CachedStage(beam.PTransform):
    """`stage` on the elements not in the store at `root`; stored outputs for the rest."""

    def __init__(self, stage: beam.PTransform, root: str, rules, meter: Meter = METER):
        super().__init__()
        self._meter = meter
        self._stage = stage
        self._root = root
        self._rules = rules

    def expand(self, elements):
        looked = elements | "LookUpCache" >> beam.ParDo(_LookUpFn(self._root, self._rules, self._meter))
        hits = looked | "KeepHits" >> beam.FlatMap(lambda t: [t[1]] if t[0] else [])
        computed = (looked
                    | "KeepMisses" >> beam.FlatMap(lambda t: [] if t[0] else [t[1]])
                    | "ComputeMisses" >> self._stage
                    | "StoreOutputs" >> beam.ParDo(_StoreFn(self._root, self._rules)))
        return (hits, computed) | "HitsAndComputed" >> beam.Flatten()


def cached(stage: beam.PTransform, rules, root: str | None, meter: Meter = METER) -> beam.PTransform:
    """`stage` wrapped in a CachedStage storing under `root`; `stage` itself when root is None."""
    return stage if root is None else CachedStage(stage, root, rules, meter)
