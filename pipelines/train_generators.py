"""TrainGenerators: for each (source, semantic) without a checkpoint, train one from its photos.

Training photos arrive as PNG batches of the semantic's generator-training pool (read once per
semantic, shared by every source), joined to the training tasks by semantic. A checkpoint that
already exists with the same training settings and data is reused, so a rerun resumes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam
import numpy as np

import generators
from benchmark.images import decode_image
from benchmark.records import ImageBatch, ModelRef, TrainTask
from pipelines.compute import ComputeSettings
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


def _training_images(batches: list[ImageBatch]) -> np.ndarray:
    """Photos in pool priority order, whatever order the runner delivered the batches in."""
    unique = {b.chunk_id: b for b in batches}  # a re-executed read must not double the data
    items = sorted((rank, png) for b in unique.values() for rank, png in zip(b.ranks, b.pngs))
    return np.stack([decode_image(png) for _, png in items])


class _TrainFn(beam.DoFn):
    def __init__(self, compute: ComputeSettings, meter: Meter):
        self._compute = compute
        self._meter = meter

    def setup(self):
        self._compute.apply()

    def process(self, element):
        semantic, grouped = element
        tasks = sorted({t.source: t for t in grouped["tasks"]}.values(), key=lambda t: t.source)
        if not tasks:
            return
        images = _training_images(list(grouped["images"]))
        data_sha256 = generators.images_sha256(images)
        for task in tasks:
            if generators.is_trained(task.checkpoint, task.arch, task.training, task.options,
                                     data_sha256=data_sha256, resolution=images.shape[1]):
                log.info("reusing %s (same settings and data)", task.checkpoint)
                self._meter.count("generators_reused")
                self._meter.count("train_steps_reused", task.training.steps)
            else:
                log.info("training %s on %s: %d photos, %d steps", task.arch, semantic,
                         len(images), task.training.steps)
                with self._meter.timed("train_generators"):
                    generators.train(task.arch, images, Path(task.checkpoint), task.training,
                                     dict(task.options), checkpoint_every=task.checkpoint_every,
                                     device=self._compute.device,
                                     progress=lambda _: self._meter.count("train_steps"))
                self._meter.count("generators_trained")
            yield ModelRef(source=task.source, semantic=semantic, arch=task.arch,
                           checkpoint=task.checkpoint, folder="",
                           checkpoint_sha256=generators.sha256_file(Path(task.checkpoint)),
                           samples=task.samples)


class TrainGenerators(beam.PTransform):
    """(tasks, training-photo batches) -> ModelRefs of the trained checkpoints."""

    def __init__(self, tasks: list[TrainTask], compute: ComputeSettings, meter: Meter = METER):
        super().__init__()
        self._tasks = tasks
        self._compute = compute
        self._meter = meter

    def expand(self, photo_batches):
        tasks = (photo_batches.pipeline
                 | "CreateTrainTasks" >> beam.Create([(t.semantic, t) for t in self._tasks]))
        photos = photo_batches | "KeyPhotosBySemantic" >> beam.Map(lambda b: (b.semantic, b))
        return ({"tasks": tasks, "images": photos}
                | "JoinTasksWithPhotos" >> beam.CoGroupByKey()
                | "TrainModels" >> beam.ParDo(_TrainFn(self._compute, self._meter)).with_resource_hints(
                    **self._compute.resource_hints()))
