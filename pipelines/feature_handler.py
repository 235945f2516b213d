"""FeatureHandler: PNG batches -> perceptual feature rows, the extractor loaded once per worker.

The extractors pad every batch to their configured batch size (benchmark.features), so a row is
the same bytes whatever ImageBatch, and so whatever runner's chunking, it arrived in.
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

import numpy as np

from benchmark.config import FeaturesSpec
from benchmark.images import decode_image
from benchmark.records import FeatureBatch, ImageBatch
from pipelines.compute import ComputeSettings
from pipelines.model_handlers import StageModelHandler
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


class Extractor(Protocol):
    """What benchmark.features' extractors offer: uint8 NHWC images -> float32 rows."""
    weights_id: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def build_extractor(kind: str, spec: FeaturesSpec, device: str) -> Extractor:
    """The feature model named by SelectionSpec.extractor."""
    from benchmark.features import InceptionFeatures, LPIPSEmbedding

    if kind == "inception":
        s = spec.inception
        return InceptionFeatures(s.weights, config_key="features.inception.weights", device=device,
                                 input_size=s.input_size, precision=s.precision,
                                 batch_size=s.batch_size)
    return LPIPSEmbedding(spec.lpips.backbone_weights, config_key="features.lpips.backbone_weights",
                          device=device)


def extract_features(batch: ImageBatch, extractor: Extractor) -> FeatureBatch:
    images = np.stack([decode_image(p) for p in batch.pngs])
    return FeatureBatch(chunk_id=batch.chunk_id, role=batch.role, keys=batch.keys,
                        features=extractor(images))


class FeatureHandler(StageModelHandler[ImageBatch, FeatureBatch, Extractor]):
    """ImageBatches -> FeatureBatches, one per ImageBatch."""

    def __init__(self, kind: str, spec: FeaturesSpec, compute: ComputeSettings, meter: Meter = METER):
        super().__init__(compute)
        self._meter = meter
        self._kind = kind
        self._spec = spec

    def open_model(self) -> Extractor:
        return build_extractor(self._kind, self._spec, self._compute.device)

    def run_inference(self, batch: Sequence[ImageBatch], model: Extractor,
                      inference_args=None) -> list[FeatureBatch]:
        out = []
        for images in batch:
            with self._meter.timed("compute_features"):
                out.append(extract_features(images, model))
            self._meter.count(f"features_{images.role}", len(images.keys))
            log.info("features %s: %d images", images.chunk_id, len(images.keys))
        return out

    def get_num_bytes(self, batch: Sequence[ImageBatch]) -> int:
        # RunInference's default pickles the whole batch again only to measure it.
        return sum(len(png) for images in batch for png in images.pngs)
