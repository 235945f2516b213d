"""WriteShards: group samples by shard, write each tar atomically, emit its manifest rows.

Given a folder for completion records (`done_dir`), a shard whose tar a killed build already
finished, from the same samples, is kept instead of written again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

from benchmark.chunk_cache import CorruptEntry, FinishedShards
from benchmark.shards import ShardSample, write_shard
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


class _WriteShardFn(beam.DoFn):
    def __init__(self, out_dir: str, done_dir: str | None, meter: Meter):
        self._meter = meter
        self._out_dir = out_dir
        self._done_dir = done_dir

    def setup(self):
        self._finished = FinishedShards(self._done_dir) if self._done_dir else None

    def _kept(self, path: Path, samples: list[ShardSample]) -> bool:
        if self._finished is None:
            return False
        try:
            return self._finished.is_finished(path, samples)
        except CorruptEntry as exc:
            log.warning("rewriting %s: %s", path.name, exc)
            self._meter.count("cache_rejected")
            return False

    def process(self, element):
        name, samples = element
        # No de-duplication: a doubled sample fails the positions check (keys: AssignShards).
        ordered = sorted(samples, key=lambda s: s.record.position)
        positions = [s.record.position for s in ordered]
        if positions != list(range(len(ordered))):
            raise RuntimeError(f"{name}: positions {positions[:5]}... are not 0..{len(ordered) - 1}: "
                               "samples were lost or doubled upstream")
        path = Path(self._out_dir) / name
        contents = [ShardSample(s.key, s.png, s.record.row()) for s in ordered]
        if self._kept(path, contents):
            self._meter.count("shards_kept")
            self._meter.count("written_kept", len(contents))
            log.info("kept %s: finished by an earlier run from the same samples", name)
        else:
            with self._meter.timed("write_shards"):
                stats = write_shard(path, contents)
            if self._finished is not None:
                self._finished.mark_finished(path, contents, stats)
            self._meter.count("written", stats.samples)
            self._meter.count("shards_written")
            log.info("wrote %s: %d samples, %.1f MB", name, stats.samples, stats.bytes / 1e6)
        for s in ordered:
            yield s.record


class WriteShards(beam.PTransform):
    """StoredSample -> tar files under out_dir (KEY.png + KEY.json, the record's row); output:
    each sample's SampleRecord, for the manifest. With `done_dir`, finished shards are kept."""

    def __init__(self, out_dir: str, done_dir: str | None = None, meter: Meter = METER):
        super().__init__()
        self._out_dir = out_dir
        self._done_dir = done_dir
        self._meter = meter

    def expand(self, samples):
        return (samples
                | "KeyByShard" >> beam.Map(lambda s: (s.record.shard, s))
                | "GroupShard" >> beam.GroupByKey()
                | "WriteTar" >> beam.ParDo(_WriteShardFn(self._out_dir, self._done_dir, self._meter)))
