"""Helpers the per-architecture tests share: random training photos and tiny network pairs."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from generators.base import isolated_rng

# Tiny versions of every network family at 32 px: a few training steps take seconds.
TINY_OPTIONS = {
    "progan": {"ch": 8, "dim_z": 16},
    "cramergan": {"ch": 8, "dim_z": 32, "feature_dim": 8},
    "mmdgan": {"ch": 8, "dim_z": 32, "feature_dim": 8},
    "sngan": {"ch": 8, "dim_z": 32},
    "stylegan": {"ch": 8, "dim_z": 16, "n_mlp": 2},
    "stylegan2": {"ch": 8, "dim_z": 16, "n_mlp": 2},
    "stylegan3": {"ch": 4, "dim_z": 8, "dim_w": 8, "num_layers": 3},
    "ddpm": {"ch": 8, "layers_per_block": 1, "sample_steps": 2},
}


def random_photos(n: int = 16, resolution: int = 32) -> np.ndarray:
    """uint8 (n, R, R, 3) noise: enough for a few training steps of a tiny network."""
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


def tiny_networks(family: ModuleType, options: dict, resolution: int = 32, seed: int = 0, **extra):
    """(generator, discriminator) of `family` built from options + extra on a private RNG."""
    opts = family.parse_options({**options, **extra})
    with isolated_rng(seed):
        return family.build_generator(resolution, opts), family.build_discriminator(resolution, opts)
