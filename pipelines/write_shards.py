"""WriteShards: group samples by shard, write each tar atomically, emit its manifest rows."""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

from benchmark.shards import ShardSample, write_shard
from pipelines.stage_metrics import counter, timed

log = logging.getLogger(__name__)


class _WriteShardFn(beam.DoFn):
    def __init__(self, out_dir: str):
        self._out_dir = out_dir

    def process(self, element):
        name, samples = element
        # No de-duplication: a doubled sample fails the positions check (keys: AssignShards).
        ordered = sorted(samples, key=lambda s: s.record.position)
        positions = [s.record.position for s in ordered]
        if positions != list(range(len(ordered))):
            raise RuntimeError(f"{name}: positions {positions[:5]}... are not 0..{len(ordered) - 1}: "
                               "samples were lost or doubled upstream")
        with timed("write_shards"):
            stats = write_shard(Path(self._out_dir) / name,
                                [ShardSample(s.key, s.png, s.record.row()) for s in ordered])
        counter("written").inc(stats.samples)
        log.info("wrote %s: %d samples, %.1f MB", name, stats.samples, stats.bytes / 1e6)
        for s in ordered:
            yield s.record


class WriteShards(beam.PTransform):
    """StoredSample -> tar files under out_dir (KEY.png + KEY.json, the record's row); output:
    each sample's SampleRecord, for the manifest."""

    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, samples):
        return (samples
                | "KeyByShard" >> beam.Map(lambda s: (s.record.shard, s))
                | "GroupShard" >> beam.GroupByKey()
                | "WriteTar" >> beam.ParDo(_WriteShardFn(self._out_dir)))
