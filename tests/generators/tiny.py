"""Helpers the per-architecture tests share: random training photos and tiny network pairs."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from generators.base import isolated_rng


def random_photos(n: int = 16, resolution: int = 32) -> np.ndarray:
    """uint8 (n, R, R, 3) noise: enough for a few training steps of a tiny network."""
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


def tiny_networks(family: ModuleType, options: dict, resolution: int = 32, seed: int = 0, **extra):
    """(generator, discriminator) of `family` built from options + extra on a private RNG."""
    opts = family.parse_options({**options, **extra})
    with isolated_rng(seed):
        return family.build_generator(resolution, opts), family.build_discriminator(resolution, opts)
