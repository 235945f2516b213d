"""SampleGenerators: ModelRefs -> fixed-size index chunks -> PNG batches of sampled images.

The chunk, not the runner, decides the batch, so every image is computed with the same maths on
any runner; the generators run behind GeneratorHandler (pipelines.generator_handler).
"""

from __future__ import annotations

import apache_beam as beam

from benchmark.keys import latent_seed
from benchmark.records import ModelRef, SampleChunk
from pipelines.compute import ComputeSettings
from pipelines.generator_handler import GeneratorHandler
from pipelines.model_handlers import RunOnChunks
from pipelines.stage_metrics import METER, Meter


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


class SampleChunks(beam.PTransform):
    """SampleChunks -> one ImageBatch each (role `candidate`), with the chunk's id: the
    sampling itself, which a resumed build runs only on the chunks it has not stored yet."""

    def __init__(self, resolution: int, compute: ComputeSettings, meter: Meter = METER):
        super().__init__()
        self._handler = GeneratorHandler(resolution, compute, meter)

    def expand(self, chunks):
        return chunks | "SampleImages" >> RunOnChunks(self._handler)


class SampleGenerators(beam.PTransform):
    """ModelRefs -> ImageBatches of sampled images (role `candidate`)."""

    def __init__(self, chunk_size: int, resolution: int, compute: ComputeSettings, seed: int,
                 meter: Meter = METER):
        super().__init__()
        self._chunk_size = chunk_size
        self._seed = seed
        self._sample = SampleChunks(resolution, compute, meter)

    def expand(self, models):
        return (models
                | "PlanSeedChunks" >> beam.FlatMap(plan_chunks, self._chunk_size, self._seed)
                | "ReshuffleChunks" >> beam.Reshuffle()
                | "SampleChunks" >> self._sample)
