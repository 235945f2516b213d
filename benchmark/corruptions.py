"""ImageNet-C corruptions on uint8 RGB batches, through the `imagecorruptions` reference.

Route: the maintained fork `imagecorruptions-imaug` (same import name). Upstream 1.1.2 does not
import on current stacks (`pkg_resources` removed from setuptools >= 81, `np.float_` from numpy 2,
`multichannel` from scikit-image 0.26); the fork fixes exactly those three and nothing else,
which a local shim would have to re-do by patching the library's internals.

The reference draws from NumPy's global RNG (and glass_blur from Numba's own). Each image is
corrupted under its own seed, set on both generators and the previous global state restored,
so an image's corruption depends on its seed alone, never on batch or worker.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from benchmark.protocol import CORRUPTIONS, SEVERITIES, UNSEEN_CORRUPTIONS, seen_corruptions


def names(subset: str = "all", unseen_set: str = "repmix") -> tuple[str, ...]:
    """Corruption names: `all` (19), `seen` (15) or `unseen` (4) under the named held-out set."""
    if unseen_set not in UNSEEN_CORRUPTIONS:
        raise ValueError(f"unknown unseen set {unseen_set!r}; one of {sorted(UNSEEN_CORRUPTIONS)}")
    if subset == "all":
        return CORRUPTIONS
    if subset == "seen":
        return seen_corruptions(unseen_set)
    if subset == "unseen":
        return UNSEEN_CORRUPTIONS[unseen_set]
    raise ValueError(f"unknown subset {subset!r}; one of 'all', 'seen', 'unseen'")


def corrupt(images: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """Apply corruption `name` at `severity` to each image of a uint8 (N, H, W, 3) batch."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if min(images.shape[1:3]) < 32:
        raise ValueError(f"images must be at least 32 px, got {images.shape[2]}x{images.shape[1]}")
    if len(seeds) != len(images):
        raise ValueError(f"{len(seeds)} seeds for {len(images)} images")
    out = np.empty_like(images)
    for i, (img, seed) in enumerate(zip(images, seeds)):
        out[i] = _corrupt_one(img, name, severity, int(seed))
    return out


def _corrupt_one(img: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    from imagecorruptions import corrupt as reference_corrupt

    seed32 = seed % (2**32)
    state = np.random.get_state()
    try:
        np.random.seed(seed32)
        kwargs = {"seed": seed32} if name in ("glass_blur", "impulse_noise") else {}
        result = reference_corrupt(img, severity=severity, corruption_name=name, **kwargs)
    finally:
        np.random.set_state(state)
    result = np.asarray(result)
    if result.shape != img.shape:  # the reference may crop by a pixel on odd sizes
        raise RuntimeError(f"{name} returned {result.shape} for {img.shape}")
    return np.clip(np.rint(result), 0, 255).astype(np.uint8) if result.dtype != np.uint8 else result
