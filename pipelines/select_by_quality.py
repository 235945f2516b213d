"""SelectByQuality: per (source, semantic) cell, keep the synthetic images closest to real ones.

Features of a cell's candidates and of its semantic's reference photos meet in one group; the
selection itself is `benchmark.selection`. Real cells keep their first candidates in pool
priority order (the spares only stand in for photos that failed to decode).
"""

from __future__ import annotations

import logging

import apache_beam as beam

import numpy as np

from benchmark.config import SelectionSpec
from benchmark.keys import derive_seed
from benchmark.plan import ChunkCounts
from benchmark.protocol import REAL
from benchmark.real_sets import RealSetError
from benchmark.records import REAL_CLASS, REFERENCE, ImageBatch, Placement
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


def _stack(batches) -> tuple[list[str], list[str], np.ndarray]:
    """Rows in chunk order, one copy per chunk (a re-executed step must not double a sample)."""
    unique = sorted(_unique(batches).items())
    keys, chunks = [], []
    for chunk_id, b in unique:
        keys.extend(b.keys)
        chunks.extend([chunk_id] * len(b.keys))
    feats = np.concatenate([np.asarray(b.features, dtype=np.float32) for _, b in unique])
    return keys, chunks, feats


def _unique(batches) -> dict:
    return {b.chunk_id: b for b in batches}


class _SelectCellFn(beam.DoFn):
    def __init__(self, spec: SelectionSpec, keep: int, seed: int, meter: Meter,
                 expected: ChunkCounts | None):
        self._expected = expected
        self._meter = meter
        self._spec = spec
        self._keep = keep
        self._seed = seed

    def process(self, element):
        from benchmark.selection import select_repmix, select_yu

        (source, semantic), grouped = element
        cell = f"{source}-{semantic}"
        synthetic, reference = list(grouped["synthetic"]), list(grouped["reference"])
        if not synthetic:
            raise RuntimeError(f"cell {cell}: reference features arrived but no samples")
        if not reference:
            raise RuntimeError(f"cell {cell}: no real reference photos to compare with")
        if self._expected is not None:
            self._expected.check(f"cell {cell}, sample features", (source, semantic),
                                 len(_unique(synthetic)))
            self._expected.check(f"cell {cell}, reference features", (semantic, REFERENCE),
                                 len(_unique(reference)), kind="photos")
        keys, chunks, feats = _stack(synthetic)
        _, _, ref = _stack(reference)
        with self._meter.timed("select_by_quality"):
            if self._spec.method == "repmix_kmeans":
                sel = select_repmix(feats, ref, clusters=self._spec.clusters,
                                    per_cluster=self._spec.per_cluster,
                                    seed=derive_seed(self._seed, "kmeans", cell) % (2**31),
                                    init=self._spec.kmeans_init, fill=self._spec.fill)
            else:
                sel = select_yu(feats, ref, keep=self._keep)
        if len(sel.kept) != self._keep:
            raise RuntimeError(f"cell {cell}: selection kept {len(sel.kept)}, expected {self._keep}")
        self._meter.count("selected", len(sel.kept))
        log.info("selected %s: %d of %d", cell, len(sel.kept), len(keys))
        yield (source, semantic), [
            Placement(key=keys[i], chunk_id=chunks[i], source=source, semantic=semantic,
                      cluster=int(sel.cluster[i]), distance=float(sel.distance[i]),
                      filled=bool(sel.filled[i]))
            for i in sel.kept]


def _keep_real(element, keep: int, meter: Meter = METER, expected: ChunkCounts | None = None):
    semantic, batches = element
    unique = _unique(batches).values()
    if expected is not None:
        expected.check(f"semantic {semantic}, Real-class photos", (semantic, REAL_CLASS), len(unique),
                       kind="photos")
    ranked = sorted((r, k, b.chunk_id) for b in unique for r, k in zip(b.ranks, b.keys))
    if len(ranked) < keep:
        # a user's input problem, not a bug: the driver prints it without a traceback
        raise RealSetError(f"semantics.{semantic}.path: only {len(ranked)} of the Real-class "
                           f"candidate photos decoded, the Real class needs {keep}; "
                           f"rejections.parquet in the partial output lists the files that failed")
    meter.count("selected", keep)
    yield (REAL, semantic), [Placement(key=k, chunk_id=c, source=REAL, semantic=semantic)
                             for _, k, c in ranked[:keep]]


def _light(batch: ImageBatch) -> ImageBatch:
    """The batch without pixels: the real cell needs only keys and ranks."""
    return ImageBatch(chunk_id=batch.chunk_id, source=batch.source, semantic=batch.semantic,
                      role=batch.role, keys=batch.keys, pngs=(), ranks=batch.ranks,
                      origins=(), generator=batch.generator, checkpoint_sha256="")


class SelectByQuality(beam.PTransform):
    """(synthetic features, reference features, real-class batches) -> (cell, [Placement])."""

    def __init__(self, spec: SelectionSpec, keep: int, seed: int, meter: Meter = METER,
                 expected: ChunkCounts | None = None):
        """`expected`: the plan's chunk counts; each cell checks that all its chunks arrived."""
        super().__init__()
        self._expected = expected
        self._spec = spec
        self._keep = keep
        self._seed = seed
        self._meter = meter

    def expand(self, inputs):
        synthetic, reference, real_batches = inputs
        generated = ({"synthetic": synthetic, "reference": reference}
                     | "GroupCellFeatures" >> beam.CoGroupByKey()
                     | "SelectCell" >> beam.ParDo(_SelectCellFn(self._spec, self._keep, self._seed, self._meter,
                                                         self._expected)))
        real = (real_batches
                | "DropPixels" >> beam.Map(lambda b: (b.semantic, _light(b)))
                | "GroupRealCandidates" >> beam.GroupByKey()
                | "KeepRealByRank" >> beam.FlatMap(_keep_real, self._keep, self._meter, self._expected))
        return (generated, real) | "FlattenCells" >> beam.Flatten()
