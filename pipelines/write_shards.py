"""WriteShards: group samples by shard, write each tar atomically, emit its manifest rows."""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

from benchmark.shards import write_shard
from pipelines.stage_metrics import counter, timed

log = logging.getLogger(__name__)


class _WriteShardFn(beam.DoFn):
    def __init__(self, out_dir: str):
        self._out_dir = out_dir

    def process(self, element):
        name, samples = element
        by_key = {s.key: s for s in samples}
        ordered = sorted(by_key.values(), key=lambda s: s.meta["position"])
        positions = [s.meta["position"] for s in ordered]
        if positions != list(range(len(ordered))):
            raise RuntimeError(f"{name}: positions {positions[:5]}... are not 0..{len(ordered) - 1}: "
                               "samples were lost or doubled upstream")
        with timed("write_shards"):
            stats = write_shard(Path(self._out_dir) / name, ordered)
        counter("written").inc(stats.samples)
        log.info("wrote %s: %d samples, %.1f MB", name, stats.samples, stats.bytes / 1e6)
        for s in ordered:
            yield dict(s.meta)


class WriteShards(beam.PTransform):
    """ShardSample -> tar files under out_dir; output: one manifest row per sample."""

    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, samples):
        return (samples
                | "KeyByShard" >> beam.Map(lambda s: (s.meta["shard"], s))
                | "GroupShard" >> beam.GroupByKey()
                | "WriteTar" >> beam.ParDo(_WriteShardFn(self._out_dir)))
