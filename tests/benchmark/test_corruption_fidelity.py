"""The engine against the reference (`imagecorruptions`), every corruption at every severity.

Pixel-exact corruptions (the engine draws the reference's random numbers) must agree within 1
grey level mean absolute difference; gaussian/shot/speckle noise, drawn from a faster generator,
on the residual's mean and std (5%). Criteria and image maker: benchmark/corruptions/fidelity.py.
"""

import cv2
import numpy as np
import pytest

from benchmark.corruptions import corrupt, names
from benchmark.corruptions.fidelity import STATISTICAL, agreement, synthetic_photos
from tests.conftest import SHARED_REAL

SEVERITIES = (1, 2, 3, 4, 5)
PHOTOS = synthetic_photos(3, 64, seed=7)


def _check(name, images, seeds):
    for severity in SEVERITIES:
        engine = corrupt(images, name, severity, seeds)
        reference = corrupt(images, name, severity, seeds, backend="reference")
        result = agreement(name, images, engine, reference)
        assert result.ok, f"severity {severity}: {result.describe()}"
        if name not in STATISTICAL:  # same draws: the same picture, not just the same stats
            assert result.mean_abs_diff < 0.2, f"severity {severity}: {result.describe()}"


@pytest.mark.parametrize("name", names("all"))
def test_engine_matches_reference_on_made_photos(name):
    _check(name, PHOTOS, [101, 202, 303])


def _smooth_images(h=40, w=57):
    """Noise-free gradients: flat areas expose a systematic rounding bias (a kernel summing to
    1 - 1e-8 truncates every flat pixel one level down) that textured images average away."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (h + w)], -1)
    base = base.astype(np.uint8)
    return np.stack([base, base[::-1].copy()])


@pytest.mark.parametrize("name", names("all"))
def test_engine_matches_reference_on_smooth_gradients(name):
    _check(name, _smooth_images(), [8, 9])


@pytest.mark.parametrize("name", names("all"))
def test_engine_matches_reference_on_celeba(name):
    folder = SHARED_REAL / "celeba"
    if not folder.is_dir():
        pytest.skip(f"shared sample photos not found at {folder} (a user's clone has none)")
    paths = sorted(folder.glob("*.jpg"))[:2]
    # native 178 x 218: a real, non-square, non-power-of-two size
    images = np.stack([cv2.imread(str(p))[..., ::-1] for p in paths])
    _check(name, np.ascontiguousarray(images), [11, 12])


def test_noise_statistics_would_catch_a_wrong_strength():
    """The statistical criterion is not vacuous: a neighbouring severity fails it."""
    x = PHOTOS
    reference = corrupt(x, "gaussian_noise", 3, [1, 2, 3], backend="reference")
    assert agreement("gaussian_noise", x, corrupt(x, "gaussian_noise", 3, [1, 2, 3]), reference).ok
    stronger = corrupt(x, "gaussian_noise", 4, [1, 2, 3])
    assert not agreement("gaussian_noise", x, stronger, reference).ok
