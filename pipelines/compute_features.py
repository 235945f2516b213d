"""ComputeFeatures: PNG batches -> perceptual features, keyed by the cell they are compared in.

Synthetic candidates go to their own (source, semantic) cell; a batch of real reference
photos goes to every generator cell of its semantic. The extractor runs behind FeatureHandler
(pipelines.feature_handler), loaded once per worker.
"""

from __future__ import annotations

from typing import Iterator

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler

from benchmark.config import FeaturesSpec
from benchmark.records import CANDIDATE, REFERENCE, FeatureBatch
from pipelines.compute import ComputeSettings
from pipelines.feature_handler import FeatureHandler
from pipelines.model_handlers import RunOnChunks


def to_cells(origin: tuple[str, str], features: FeatureBatch,
             sources: tuple[str, ...]) -> Iterator[tuple[tuple[str, str], FeatureBatch]]:
    """The (source, semantic) cells a batch's features are compared in, from where it came from."""
    source, semantic = origin
    if features.role == CANDIDATE:
        yield (source, semantic), features
    elif features.role == REFERENCE:
        for generator_source in sources:
            yield (generator_source, semantic), features
    else:
        raise ValueError(f"{features.chunk_id}: no features for role {features.role}")


class ComputeFeatures(beam.PTransform):
    """ImageBatches (candidate or reference) -> ((source, semantic), FeatureBatch)."""

    def __init__(self, kind: str, spec: FeaturesSpec, compute: ComputeSettings,
                 sources: tuple[str, ...]):
        super().__init__()
        self._handler = KeyedModelHandler(FeatureHandler(kind, spec, compute))
        self._sources = sources

    def expand(self, batches):
        return (batches
                | "KeyByOrigin" >> beam.Map(lambda b: ((b.source, b.semantic), b))
                | "ExtractFeatures" >> RunOnChunks(self._handler)
                | "KeyByCell" >> beam.FlatMap(lambda kv, sources: to_cells(*kv, sources),
                                              self._sources))
