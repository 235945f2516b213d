"""ComputeFeatures: PNG batches -> perceptual features, keyed by the cell they are compared in.

Synthetic candidates go to their own (source, semantic) cell; a batch of real reference
photos goes to every generator cell of its semantic. The extractor is loaded once per worker.
"""

from __future__ import annotations

import logging

import apache_beam as beam
import numpy as np

from benchmark.config import FeaturesSpec
from benchmark.images import decode_image
from benchmark.records import CANDIDATE, REFERENCE, FeatureBatch, ImageBatch
from pipelines.compute import ComputeSettings
from pipelines.stage_metrics import counter, timed

log = logging.getLogger(__name__)


def build_extractor(kind: str, spec: FeaturesSpec, device: str):
    """The feature model named by SelectionSpec.extractor (loaded lazily on workers)."""
    from benchmark.features import InceptionFeatures, LPIPSEmbedding

    if kind == "inception":
        s = spec.inception
        return InceptionFeatures(s.weights, config_key="features.inception.weights", device=device,
                                 input_size=s.input_size, precision=s.precision,
                                 batch_size=s.batch_size)
    return LPIPSEmbedding(spec.lpips.backbone_weights, config_key="features.lpips.backbone_weights",
                          device=device)


class _FeaturesFn(beam.DoFn):
    def __init__(self, kind: str, spec: FeaturesSpec, compute: ComputeSettings,
                 sources: tuple[str, ...]):
        self._kind = kind
        self._spec = spec
        self._compute = compute
        self._sources = sources
        self._extractor = None

    def setup(self):
        self._compute.apply()
        self._extractor = build_extractor(self._kind, self._spec, self._compute.device)

    def process(self, batch: ImageBatch):
        with timed("compute_features"):
            images = np.stack([decode_image(p) for p in batch.pngs])
            feats = self._extractor(images)
        counter(f"features_{batch.role}").inc(len(batch.keys))
        log.info("features %s: %d images", batch.chunk_id, len(batch.keys))
        out = FeatureBatch(chunk_id=batch.chunk_id, role=batch.role, keys=batch.keys, features=feats)
        if batch.role == CANDIDATE:
            yield (batch.source, batch.semantic), out
        elif batch.role == REFERENCE:
            for source in self._sources:
                yield (source, batch.semantic), out
        else:
            raise ValueError(f"{batch.chunk_id}: no features for role {batch.role}")


class ComputeFeatures(beam.PTransform):
    """ImageBatches (candidate or reference) -> ((source, semantic), FeatureBatch)."""

    def __init__(self, kind: str, spec: FeaturesSpec, compute: ComputeSettings,
                 sources: tuple[str, ...]):
        super().__init__()
        self._fn = _FeaturesFn(kind, spec, compute, sources)

    def expand(self, batches):
        return batches | "ExtractFeatures" >> beam.ParDo(self._fn)
