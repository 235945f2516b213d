"""The benchmark's premise, checked on our own networks: architectures leave fingerprints.

Every network architecture is trained briefly on the same photos with the same seed, then a
small classifier (logistic regression on the log-amplitude spectrum, the classic
fingerprint feature of Frank et al. 2020) must tell their samples apart on held-out seeds far
above chance. A family whose samples were, say, the same network under another name, or a
constant image, would fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import generators
from benchmark.protocol import FOLDER_ONLY_ARCHS
from generators.base import NetworkGenerator
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS as TINY

# Architectures we train (the others read a folder made elsewhere).
NETWORK_ARCHS = tuple(a for a in generators.ARCHITECTURES if a not in FOLDER_ONLY_ARCHS)
TRAIN_SEEDS, TEST_SEEDS = range(0, 48), range(1000, 1024)


def test_every_network_architecture_has_tiny_settings_here():
    assert set(TINY) == set(NETWORK_ARCHS)


def photos(n: int = 32, resolution: int = 32) -> np.ndarray:
    """Smooth colour fields: the same learnable training set for every architecture."""
    import cv2

    rng = np.random.default_rng(0)
    return np.stack([cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (resolution, resolution),
                                interpolation=cv2.INTER_CUBIC) for _ in range(n)])


def spectrum(images: np.ndarray) -> np.ndarray:
    """Per-image log-amplitude 2D spectrum of the grey image, flattened."""
    grey = images.astype(np.float32).mean(axis=3)
    # rfft2: a real image's spectrum is symmetric, so half of it says everything.
    return np.log1p(np.abs(np.fft.rfft2(grey - grey.mean(axis=(1, 2), keepdims=True)))).reshape(len(images), -1)


def train_and_sample() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(train-seed samples, test-seed samples) per architecture, after 3 training steps."""
    data = photos()
    out = {}
    for arch in NETWORK_ARCHS:
        family = generators.family(arch)
        options = family.parse_options(TINY[arch])
        config = resolve_config(family, steps=3, batch_size=8, seed=0, n_dis=1)
        gen = NetworkGenerator(arch, fit(family, data, config, options).generator, 32, "")
        out[arch] = (gen.sample(TRAIN_SEEDS), gen.sample(TEST_SEEDS))
    return out


@pytest.fixture(scope="module")
def samples() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return train_and_sample()


def test_samples_are_images_not_constants(samples):
    for arch, (train, _) in samples.items():
        assert train.dtype == np.uint8 and train.shape == (len(TRAIN_SEEDS), 32, 32, 3), arch
        # DCGAN-initialised nets (N(0, 0.02)) start near grey; they still vary per seed.
        assert train.std(axis=0).mean() > 0.1, f"{arch}: every seed gives the same image"


def test_a_small_classifier_tells_the_architectures_apart(samples):
    archs = sorted(samples)
    x_train = np.concatenate([spectrum(samples[a][0]) for a in archs])
    y_train = np.repeat(np.arange(len(archs)), len(TRAIN_SEEDS))
    x_test = np.concatenate([spectrum(samples[a][1]) for a in archs])
    y_test = np.repeat(np.arange(len(archs)), len(TEST_SEEDS))
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.01))
    clf.fit(x_train, y_train)
    accuracy = float((clf.predict(x_test) == y_test).mean())
    per_class = {a: float((clf.predict(x_test[y_test == i]) == i).mean()) for i, a in enumerate(archs)}
    chance = 1 / len(archs)
    assert accuracy > 5 * chance, f"held-out accuracy {accuracy:.2f} (chance {chance:.2f}): {per_class}"
