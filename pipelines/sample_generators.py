"""SampleGenerators: ModelRefs -> fixed-size index chunks -> PNG batches of sampled images.

A worker loads each model once and keeps it for the chunks that follow; the chunk, not the
runner, decides the batch, so every image is computed with the same maths on any runner.
"""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

import generators
from benchmark.images import encode_png
from benchmark.keys import latent_seed, synthetic_key
from benchmark.records import CANDIDATE, ImageBatch, ModelRef, SampleChunk
from pipelines.compute import ComputeSettings
from pipelines.stage_metrics import counter, timed

log = logging.getLogger(__name__)


def plan_chunks(model: ModelRef, chunk_size: int, seed: int) -> list[SampleChunk]:
    """A model's sample indices in chunks of `chunk_size`, each index with its latent seed."""
    chunks = []
    for start in range(0, model.samples, chunk_size):
        stop = min(start + chunk_size, model.samples)
        seeds = tuple(latent_seed(seed, model.source, model.semantic, model.arch, i)
                      for i in range(start, stop))
        chunks.append(SampleChunk(chunk_id=f"{model.source}-{model.semantic}-c{start // chunk_size:06d}",
                                  model=model, start=start, stop=stop, seeds=seeds))
    return chunks


class _SampleChunkFn(beam.DoFn):
    def __init__(self, resolution: int, compute: ComputeSettings):
        self._resolution = resolution
        self._compute = compute
        self._loaded: tuple[ModelRef, object] | None = None

    def setup(self):
        self._compute.apply()

    def _generator(self, model: ModelRef):
        # One model per worker at a time: chunks of a model arrive together after the
        # reshuffle often enough, and holding several large generators would not fit a GPU.
        if self._loaded is None or self._loaded[0] != model:
            self._loaded = (model, generators.load(
                model.arch, checkpoint=Path(model.checkpoint) if model.checkpoint else None,
                folder=Path(model.folder) if model.folder else None,
                resolution=self._resolution, device=self._compute.device))
        return self._loaded[1]

    def process(self, chunk: SampleChunk):
        m = chunk.model
        with timed("sample_generators"):
            gen = self._generator(m)
            if gen.checkpoint_sha256 != m.checkpoint_sha256:
                raise RuntimeError(f"{m.checkpoint or m.folder} changed during the build "
                                   f"(sha256 {gen.checkpoint_sha256} != {m.checkpoint_sha256})")
            images = gen.sample(list(chunk.seeds))
            pngs = tuple(encode_png(img) for img in images)
        indices = tuple(range(chunk.start, chunk.stop))
        counter("sampled").inc(len(indices))
        log.info("sampled %s: samples %d..%d", chunk.chunk_id, chunk.start, chunk.stop - 1)
        yield ImageBatch(chunk_id=chunk.chunk_id, source=m.source, semantic=m.semantic,
                         role=CANDIDATE, keys=tuple(synthetic_key(m.source, m.semantic, i) for i in indices),
                         pngs=pngs, ranks=indices, origins=tuple("" for _ in indices),
                         generator=m.arch, checkpoint_sha256=m.checkpoint_sha256,
                         latent_seeds=chunk.seeds)


class SampleChunks(beam.PTransform):
    """SampleChunks -> one ImageBatch each (role `candidate`), with the chunk's id: the
    sampling itself, which a resumed build runs only on the chunks it has not stored yet."""

    def __init__(self, resolution: int, compute: ComputeSettings):
        super().__init__()
        self._resolution = resolution
        self._compute = compute

    def expand(self, chunks):
        return chunks | "SampleImages" >> beam.ParDo(_SampleChunkFn(self._resolution, self._compute))


class SampleGenerators(beam.PTransform):
    """ModelRefs -> ImageBatches of sampled images (role `candidate`)."""

    def __init__(self, chunk_size: int, resolution: int, compute: ComputeSettings, seed: int):
        super().__init__()
        self._chunk_size = chunk_size
        self._seed = seed
        self._resolution = resolution
        self._compute = compute

    def expand(self, models):
        return (models
                | "PlanSeedChunks" >> beam.FlatMap(plan_chunks, self._chunk_size, self._seed)
                | "ReshuffleChunks" >> beam.Reshuffle()
                | "SampleChunks" >> SampleChunks(self._resolution, self._compute))
