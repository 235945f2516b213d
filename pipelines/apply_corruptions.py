"""ApplyCorruptions: val/test images get the ImageNet-C corruption their key decides.

Train images are stored clean (the training stage corrupts them on the fly); each corrupted
image is re-encoded losslessly, so the only loss is the corruption itself. The spec's backend
(fast engine or reference) and route (`apply_at`: stored size, or a 224 px round trip) apply
to every image; both are saved with the config in dataset_info.json, not per row.
"""

from __future__ import annotations

import apache_beam as beam

from benchmark.config import CorruptionSpec
from benchmark.corruption_policy import CLEAN, choose_corruption
from benchmark.corruptions import names
from benchmark.images import decode_image, encode_png
from benchmark.online_corruption import corrupt_image
from benchmark.manifest import StoredSample
from pipelines.stage_metrics import METER, Meter


def corrupt_sample(sample: StoredSample, seed: int, spec: CorruptionSpec,
                   meter: Meter = METER) -> StoredSample:
    choice = choose_corruption(sample.key, sample.record.split, seed, spec)
    if choice.name == CLEAN:
        meter.count("clean")
        return sample
    with meter.timed("apply_corruptions"):
        # the same function online training corrupts with, so both take the same route
        out = corrupt_image(decode_image(sample.png), choice, apply_at=spec.apply_at,
                            backend=spec.backend)
        png = encode_png(out)
    meter.count("corrupted")
    record = sample.record.corrupted(choice.name, choice.severity, choice.seed,
                                     seen=choice.name in names("seen", spec.unseen_set), png=png)
    return StoredSample(record, png)


class ApplyCorruptions(beam.PTransform):
    def __init__(self, spec: CorruptionSpec, seed: int, meter: Meter = METER):
        super().__init__()
        self._spec = spec
        self._seed = seed
        self._meter = meter

    def expand(self, samples):
        return samples | "CorruptValTest" >> beam.Map(corrupt_sample, self._seed, self._spec, self._meter)
