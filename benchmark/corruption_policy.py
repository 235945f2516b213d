"""Which corruption a stored val/test image carries: decided by (seed, key), recorded per sample."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmark.config import CorruptionSpec
from benchmark.corruptions import names
from benchmark.keys import derive_seed

CLEAN = "none"


@dataclass(frozen=True)
class CorruptionChoice:
    name: str  # a corruption name, or CLEAN
    severity: int  # 1..5, 0 when clean
    seed: int  # the corruption's own seed (noise, glass shuffle), 0 when clean


def choose_corruption(key: str, split: str, seed: int, spec: CorruptionSpec) -> CorruptionChoice:
    """Test images draw from all 19 types, val from the seen ones; train is stored clean."""
    if split == "train":
        return CorruptionChoice(CLEAN, 0, 0)
    if split == "test":
        pool, probability = names("all", spec.unseen_set), spec.test_probability
    elif split == "val":
        pool, probability = names("seen", spec.unseen_set), spec.val_probability
    else:
        raise ValueError(f"unknown split {split!r}")
    rng = np.random.default_rng(derive_seed(seed, "corruption", key))
    if rng.random() >= probability:
        return CorruptionChoice(CLEAN, 0, 0)
    name = pool[int(rng.integers(len(pool)))]
    severity = spec.severities[int(rng.integers(len(spec.severities)))]
    return CorruptionChoice(name, int(severity), derive_seed(seed, "corruption-noise", key))
