"""Which corruption a stored val/test image carries: decided by (seed, key), recorded per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from benchmark.config import CorruptionSpec
from benchmark.corruptions import names
from benchmark.keys import derive_seed
from benchmark.protocol import CLEAN


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
    return draw_choice(derive_seed(seed, "corruption", key),
                       derive_seed(seed, "corruption-noise", key), pool, probability,
                       spec.severities)


def draw_choice(choice_seed: int, noise_seed: int, pool: Sequence[str], probability: float,
                severities: Sequence[int]) -> CorruptionChoice:
    """CLEAN with probability 1 - `probability`, else a uniform corruption of `pool` at a
    uniform severity of `severities`; the draw order is fixed, since stored benchmarks depend
    on it. The offline (stored val/test) and online (training) policies share it."""
    rng = np.random.default_rng(choice_seed)
    if rng.random() >= probability:
        return CorruptionChoice(CLEAN, 0, 0)
    name = pool[int(rng.integers(len(pool)))]
    severity = severities[int(rng.integers(len(severities)))]
    return CorruptionChoice(name, int(severity), noise_seed)
