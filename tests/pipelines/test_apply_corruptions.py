"""ApplyCorruptions: the spec's backend and route reach every image, and are recorded."""

import itertools
import json

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from benchmark.config import CorruptionSpec
from benchmark.corruption_policy import choose_corruption
from benchmark.corruptions import corrupt
from benchmark.corruptions.fidelity import synthetic_photos
from benchmark.images import decode_image, encode_png
from benchmark.online_corruption import corrupt_image
from benchmark.records import CANDIDATE, ImageBatch, Placement
from benchmark.manifest import SampleRecord, StoredSample
from eval.benchmark_folder import open_benchmark
from pipelines.apply_corruptions import ApplyCorruptions, corrupt_sample
from pipelines.build_attribution88 import _finalize
from tests.pipelines.staging import manifest_rows, stage, tiny_config

IMAGE = synthetic_photos(1, 40, seed=3)[0]


def _sample(key="sngan-faces-s00000001", split="test"):
    png = encode_png(IMAGE)
    placement = Placement(key=key, chunk_id="c", source="sngan", semantic="faces", split=split,
                          shard=0, position=0, cluster=0, distance=0.5)
    batch = ImageBatch("c", "sngan", "faces", CANDIDATE, (key,), (png,), (1,), ("",), "sngan",
                       "0" * 64, latent_seeds=(11,))
    return StoredSample(SampleRecord.clean(placement, batch, 0, label=1, semantic_label=0, seen=True), png)


@pytest.mark.parametrize("spec", [CorruptionSpec(), CorruptionSpec(backend="reference"),
                                  CorruptionSpec(apply_at="resized_224")])
def test_sample_is_corrupted_with_the_spec_backend_and_route(spec):
    sample = _sample()
    choice = choose_corruption(sample.key, "test", 9, spec)
    out = corrupt_sample(sample, 9, spec)
    want = corrupt(IMAGE[None], choice.name, choice.severity, [choice.seed], backend=spec.backend,
                   work_size=spec.work_size)[0]
    assert (decode_image(out.png) == want).all()
    assert (out.record.corruption, out.record.severity, out.record.corruption_seed) == (
        choice.name, choice.severity, choice.seed)


def test_val_probability_zero_stores_val_clean_and_test_still_corrupted():
    """For the released RepMix train.py, which corrupts val again on the fly."""
    spec = CorruptionSpec(val_probability=0.0)
    for i in range(20):
        val = _sample(f"sngan-faces-s{i:08d}", split="val")
        assert corrupt_sample(val, 9, spec) == val
        assert corrupt_sample(val, 9, CorruptionSpec()).record.corruption != "none"
        test = corrupt_sample(_sample(f"sngan-faces-s{i:08d}", split="test"), 9, spec)
        assert test.record.corruption != "none" and test.record.severity >= 1


@pytest.mark.parametrize("split", ["val", "test"])
def test_two_images_of_a_split_get_their_own_noise(split):
    spec = CorruptionSpec(severities=(3,))
    keys = (f"sngan-faces-s{i:08d}" for i in range(1000))
    noisy = itertools.islice(
        (k for k in keys if choose_corruption(k, split, 9, spec).name == "gaussian_noise"), 2)
    first, second = (corrupt_sample(_sample(k, split), 9, spec) for k in noisy)
    assert first.record.corruption == second.record.corruption == "gaussian_noise"
    assert first.record.corruption_seed != second.record.corruption_seed
    # Same pixels in, same corruption and severity: only the per-image seed tells them apart.
    assert (decode_image(first.png) != decode_image(second.png)).mean() > 0.5


def test_route_changes_the_stored_bytes():
    stored = corrupt_sample(_sample(), 9, CorruptionSpec(severities=(5,)))
    resized = corrupt_sample(_sample(), 9, CorruptionSpec(severities=(5,), apply_at="resized_224"))
    assert stored.png != resized.png
    assert decode_image(resized.png).shape == IMAGE.shape


def test_train_samples_stay_clean():
    sample = _sample(split="train")
    assert corrupt_sample(sample, 9, CorruptionSpec()) is sample


def test_stage_gives_the_same_bytes_as_the_function():
    spec = CorruptionSpec(apply_at="resized_224")
    samples = [_sample(f"sngan-faces-s{i:08d}") for i in range(3)]
    want = [(s.key, corrupt_sample(s, 4, spec).png) for s in samples]
    with test_pipeline.TestPipeline() as p:
        got = (p | beam.Create(samples) | ApplyCorruptions(spec, 4)
               | beam.Map(lambda s: (s.key, s.png)))
        assert_that(got, equal_to(want))


@pytest.mark.parametrize("spec", [CorruptionSpec(), CorruptionSpec(apply_at="resized_224"),
                                  CorruptionSpec(backend="reference", apply_at="resized_224")])
def test_online_corrupt_image_is_what_the_stage_stores(spec):
    """Training corrupts with benchmark.online_corruption.corrupt_image: for the same choice it
    gives the pixels the build stores, on either route and backend."""
    samples = [_sample(f"sngan-faces-s{i:08d}") for i in range(3)]
    with test_pipeline.TestPipeline() as p:
        got = (p | beam.Create(samples) | ApplyCorruptions(spec, 4)
               | beam.Map(lambda s: (s.key, decode_image(s.png).tobytes())))
        want = [(s.key, corrupt_image(IMAGE, choose_corruption(s.key, "test", 4, spec),
                                      apply_at=spec.apply_at, backend=spec.backend).tobytes())
                for s in samples]
        assert_that(got, equal_to(want))


def test_backend_and_route_are_saved_with_the_build_config(tmp_path):
    """The build's last step writes the config's `corruptions` section into dataset_info.json
    and config.json, so a dataset says how its images were corrupted."""
    cfg = tiny_config(tmp_path, backend="reference", apply_at="resized_224", severities=[4, 2],
                      unseen_set="imagenet_c", test_probability=0.5)
    staging = tmp_path / "staging"
    stage(staging, manifest_rows(cfg))
    _finalize(cfg, staging, "random")
    want = {"backend": "reference", "apply_at": "resized_224", "severities": [2, 4],
            "unseen_set": "imagenet_c", "test_probability": 0.5, "val_probability": 1.0}
    info = json.loads((staging / "dataset_info.json").read_text())
    assert info["corruptions"] == want
    assert json.loads((staging / "config.json").read_text())["corruptions"] == want
    assert CorruptionSpec.model_validate(info["corruptions"]) == cfg.corruptions
    # ... and the benchmark reader hands the same section to training
    assert open_benchmark(staging).corruption_settings == want
