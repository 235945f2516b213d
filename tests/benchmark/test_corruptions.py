import numpy as np
import pytest

from benchmark.config import CorruptionSpec
from benchmark.corruption_policy import CLEAN, choose_corruption
from benchmark.corruptions import corrupt, names


def _images(n=2, size=64):
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_named_sets():
    assert len(names("all")) == 19
    assert set(names("unseen", "repmix")) == {"glass_blur", "motion_blur", "zoom_blur", "snow"}
    assert set(names("unseen", "imagenet_c")) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    assert len(names("seen")) == 15 and not set(names("seen")) & set(names("unseen"))


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "frost", "impulse_noise", "elastic_transform"])
def test_corruption_depends_on_the_image_seed_only(name):
    x = _images()
    both = corrupt(x, name, 2, [11, 12])
    alone = corrupt(x[1:], name, 2, [12])
    assert (both[1] == alone[0]).all()  # batch composition does not matter
    assert both.dtype == np.uint8 and both.shape == x.shape
    assert not (both == x).all()


def test_noise_differs_with_seed():
    x = _images(1)
    assert not (corrupt(x, "gaussian_noise", 3, [1]) == corrupt(x, "gaussian_noise", 3, [2])).all()


@pytest.mark.parametrize("args, message", [
    (("fisheye", 1), "unknown corruption"), (("fog", 0), "severity must be 1..5"),
    (("fog", 6), "severity must be 1..5"),
])
def test_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        corrupt(_images(1), *args, [0])


def test_bad_images():
    with pytest.raises(ValueError, match="expected uint8"):
        corrupt(_images(1).astype(np.float32), "fog", 1, [0])
    with pytest.raises(ValueError, match="at least 32 px"):
        corrupt(_images(1, 16), "fog", 1, [0])


def test_policy_train_clean_val_seen_only_test_all():
    spec = CorruptionSpec()
    keys = [f"sngan-x-s{i:08d}" for i in range(400)]
    assert all(choose_corruption(k, "train", 0, spec).name == CLEAN for k in keys)
    val = {choose_corruption(k, "val", 0, spec).name for k in keys}
    test = {choose_corruption(k, "test", 0, spec).name for k in keys}
    assert val == set(names("seen")) and test == set(names("all"))
    severities = {choose_corruption(k, "test", 0, spec).severity for k in keys}
    assert severities == {1, 2, 3, 4, 5}


def test_policy_probability_and_determinism():
    keys = [f"k{i}" for i in range(1000)]
    half = CorruptionSpec(test_probability=0.5)
    clean = sum(choose_corruption(k, "test", 0, half).name == CLEAN for k in keys)
    assert 420 < clean < 580
    assert all(choose_corruption(k, "test", 0, CorruptionSpec(test_probability=0.0)).name == CLEAN for k in keys)
    assert [choose_corruption(k, "test", 5, half) for k in keys] == [choose_corruption(k, "test", 5, half) for k in keys]
