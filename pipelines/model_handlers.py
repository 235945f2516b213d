"""How every model stage runs: a Beam ModelHandler, applied by RunInference to whole chunks.

RunInference loads a handler's model once per worker process and shares it between the stage's
DoFn instances and threads (apache_beam.utils.shared), so no stage keeps a cache of its own.

Our elements already are fixed-size chunks (the config sizes them, never the runner, so every
image and feature is computed in the same batch shape on any runner), so RunInference's own
batching is switched off (`with_no_batching`, one element per call). Batching would lose data:
BatchElements emits the last batch of every bundle from finish_bundle, even with
max_batch_size=1, and the DaskRunner of Beam 2.77 drops whatever finish_bundle emits. Measured
with 40 elements on a 2-process LocalCluster in 4 partitions: 32 came out with the default
batching, 36 with min=max=1 (the last of each partition lost), 40 with batching off; the
DirectRunner, in memory and multi_processing, gave 40 in every case.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from pipelines.compute import ComputeSettings

ExampleT = TypeVar("ExampleT")
PredictionT = TypeVar("PredictionT")
ModelT = TypeVar("ModelT")


class StageModelHandler(ModelHandler[ExampleT, PredictionT, ModelT],
                        Generic[ExampleT, PredictionT, ModelT]):
    """Our handlers' common part: the worker's torch threads, the device's resource hints."""

    def __init__(self, compute: ComputeSettings):
        super().__init__()
        self._compute = compute

    def load_model(self) -> ModelT:
        # Once per worker process: torch's thread count is per process, and part of the result.
        self._compute.apply()
        return self.open_model()

    def open_model(self) -> ModelT:
        raise NotImplementedError(type(self))

    def get_resource_hints(self) -> dict[str, Any]:
        return self._compute.resource_hints()


class RunOnChunks(beam.PTransform):
    """Chunks -> the handler's outputs: RunInference with one chunk per run_inference call."""

    def __init__(self, handler: ModelHandler):
        super().__init__()
        self._handler = handler

    def expand(self, chunks):
        return (chunks
                | "OneChunkPerCall" >> beam.Map(lambda chunk: [chunk])
                | "RunInference" >> RunInference(self._handler.with_no_batching()))
