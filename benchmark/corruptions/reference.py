"""The reference backend: ImageNet-C corruptions through the `imagecorruptions` package itself.

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


def corrupt(images: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """Corrupt a validated uint8 (N, H, W, 3) batch image by image; `seeds` are 32-bit."""
    out = np.empty_like(images)
    for i, (img, seed) in enumerate(zip(images, seeds)):
        out[i] = _corrupt_one(img, name, severity, int(seed))
    return out


def _corrupt_one(img: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    from imagecorruptions import corrupt as reference_corrupt

    state = np.random.get_state()
    try:
        np.random.seed(seed)
        kwargs = {"seed": seed} if name in ("glass_blur", "impulse_noise") else {}
        result = reference_corrupt(img, severity=severity, corruption_name=name, **kwargs)
    finally:
        np.random.set_state(state)
    result = np.asarray(result)
    if result.shape != img.shape:
        raise RuntimeError(f"reference {name} returned {result.shape} for {img.shape}")
    return result
