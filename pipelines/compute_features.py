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
from pipelines.stage_metrics import METER, Meter


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
    """ImageBatches (candidate or reference) -> ((source, semantic), FeatureBatch): each batch
    sent to the cells it is compared in, or, without `sources`, keyed by where it came from
    (one output per batch, as the resume store keeps them; `to_cells` then fans out)."""

    def __init__(self, kind: str, spec: FeaturesSpec, compute: ComputeSettings,
                 sources: tuple[str, ...] | None = None, meter: Meter = METER):
        super().__init__()
        self._handler = KeyedModelHandler(FeatureHandler(kind, spec, compute, meter))
        self._sources = sources

    def expand(self, batches):
        features = (batches
                    | "KeyByOrigin" >> beam.Map(lambda b: ((b.source, b.semantic), b))
                    | "ExtractFeatures" >> RunOnChunks(self._handler))
        if self._sources is None:
            return features
        return features | "KeyByCell" >> beam.FlatMap(cells_of, self._sources)


def cells_of(element: tuple[tuple[str, str], FeatureBatch],
             sources: tuple[str, ...]) -> Iterator[tuple[tuple[str, str], FeatureBatch]]:
    """`to_cells` of an (origin, features) element."""
    return to_cells(*element, sources)
