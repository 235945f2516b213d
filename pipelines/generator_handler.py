"""GeneratorHandler: seed chunks -> PNG batches, sampled by the generator each chunk names.

Which generators a build samples is only known at run time (it trains some of them), so the
handler's model is not one network but `_GeneratorOpener`: RunInference loads it once per worker
process, and it holds the generator of the last ModelRef asked for, opening another only when a
chunk names another. One at a time: chunks of a model mostly arrive together after the
reshuffle, and several large generators would not fit a GPU.

Beam's per-key answer, a KeyedModelHandler with a handler per cell, was measured and set aside:
with several models it serves each from one process per machine (multi_process_shared) and the
other workers call it remotely, so with 2 workers every chunk ran in 1 process.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

import generators
from benchmark.images import encode_png
from benchmark.keys import synthetic_key
from benchmark.records import CANDIDATE, ImageBatch, ModelRef, SampleChunk
from pipelines.compute import ComputeSettings
from pipelines.model_handlers import StageModelHandler
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


class _GeneratorOpener:
    """ModelRef -> its loaded generator; keeps only the last one (shared by a worker's threads)."""

    def __init__(self, resolution: int, device: str):
        self._resolution = resolution
        self._device = device
        self._lock = threading.Lock()
        self._current: tuple[ModelRef, generators.Generator] | None = None

    def __call__(self, model: ModelRef) -> generators.Generator:
        with self._lock:
            if self._current is None or self._current[0] != model:
                self._current = None  # let the old generator go before the next one loads
                self._current = (model, generators.load(
                    model.arch, checkpoint=Path(model.checkpoint) if model.checkpoint else None,
                    folder=Path(model.folder) if model.folder else None,
                    resolution=self._resolution, device=self._device, settings=dict(model.settings)))
            return self._current[1]


def sample_chunk(chunk: SampleChunk, gen: generators.Generator) -> ImageBatch:
    """The chunk's images from `gen`, refused if its weights are not the ones the plan saw."""
    m = chunk.model
    if gen.checkpoint_sha256 != m.checkpoint_sha256:
        raise RuntimeError(f"{m.checkpoint or m.folder} changed during the build "
                           f"(sha256 {gen.checkpoint_sha256} != {m.checkpoint_sha256})")
    pngs = tuple(encode_png(img) for img in gen.sample(list(chunk.seeds)))
    indices = tuple(range(chunk.start, chunk.stop))
    return ImageBatch(chunk_id=chunk.chunk_id, source=m.source, semantic=m.semantic,
                      role=CANDIDATE, keys=tuple(synthetic_key(m.source, m.semantic, i) for i in indices),
                      pngs=pngs, ranks=indices, origins=tuple("" for _ in indices),
                      generator=m.arch, checkpoint_sha256=m.checkpoint_sha256,
                      latent_seeds=chunk.seeds)


class GeneratorHandler(StageModelHandler[SampleChunk, ImageBatch, _GeneratorOpener]):
    """SampleChunks -> ImageBatches (role `candidate`), one batch per chunk."""

    def __init__(self, resolution: int, compute: ComputeSettings, meter: Meter = METER):
        super().__init__(compute)
        self._resolution = resolution
        self._meter = meter

    def open_model(self) -> _GeneratorOpener:
        return _GeneratorOpener(self._resolution, self._compute.device)

    def run_inference(self, batch: Sequence[SampleChunk], model: _GeneratorOpener,
                      inference_args=None) -> list[ImageBatch]:
        out = []
        for chunk in batch:
            with self._meter.timed("sample_generators"):
                images = sample_chunk(chunk, model(chunk.model))
            self._meter.count("sampled", len(images.keys))
            log.info("sampled %s: samples %d..%d", chunk.chunk_id, chunk.start, chunk.stop - 1)
            out.append(images)
        return out
