"""How the engine is held to the reference: which corruptions must match pixel for pixel, which
in distribution, the tolerances, and a photo-like test image maker (smooth gradients, shapes).

The engine draws the same random numbers as the reference for every corruption except the
three whose noise is drawn from a faster generator (see engine.py); those are compared on the
statistics of the residual (corrupted - clean).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

STATISTICAL = ("gaussian_noise", "shot_noise", "speckle_noise")
MAX_MEAN_ABS_DIFF = 1.0  # grey levels, for the exact-draw corruptions
MAX_STAT_ERROR = 0.05  # relative, for the residual mean and std of the noise ones


@dataclass(frozen=True)
class Agreement:
    name: str
    mean_abs_diff: float  # engine vs reference, grey levels
    residual_mean: tuple[float, float]  # (engine, reference), grey levels
    residual_std: tuple[float, float]
    ok: bool

    def describe(self) -> str:
        kind = "stats" if self.name in STATISTICAL else "pixels"
        return (f"{self.name:18s} {kind:6s} mad {self.mean_abs_diff:6.3f}  "
                f"res.mean {self.residual_mean[0]:7.2f} / {self.residual_mean[1]:7.2f}  "
                f"res.std {self.residual_std[0]:6.2f} / {self.residual_std[1]:6.2f}  "
                f"{'ok' if self.ok else 'FAIL'}")


def agreement(name: str, clean: np.ndarray, engine: np.ndarray, reference: np.ndarray) -> Agreement:
    """Compare engine and reference outputs of `name` on the same clean uint8 images.

    Pixel corruptions pass within MAX_MEAN_ABS_DIFF. Noise ones pass when the residual std is
    within MAX_STAT_ERROR of the reference's and so is the residual mean; a residual mean near
    zero (clipping at both ends can cancel) has no meaningful relative error, so the mean is
    judged on the scale max(|mean|, std): a shift of 5% of the noise's spread at most.
    """
    e = engine.astype(np.float64) - clean
    r = reference.astype(np.float64) - clean
    mad = float(np.abs(engine.astype(np.float64) - reference).mean())
    means = (float(e.mean()), float(r.mean()))
    stds = (float(e.std()), float(r.std()))
    if name in STATISTICAL:
        scale = max(abs(means[1]), stds[1])
        ok = (abs(means[0] - means[1]) <= MAX_STAT_ERROR * scale
              and abs(stds[0] - stds[1]) <= MAX_STAT_ERROR * stds[1])
    else:
        ok = mad <= MAX_MEAN_ABS_DIFF
    return Agreement(name, mad, means, stds, ok)


def synthetic_photos(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Photo-like uint8 (n, size, size, 3) images: smooth colour gradients, a disc, a box, a
    line and mild texture, so blurs, edges, flat areas and both ends of the range all occur."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(0.3, 1.0, 3)
        img = np.stack([255 * a * xx, 255 * b * yy, 255 * c * (1 - xx * yy)], -1)
        img += rng.normal(0, 4, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, (int(cx), int(cy)), size // 6, colour, -1)
        x0, y0 = rng.integers(0, size // 2, 2)
        cv2.rectangle(img, (int(x0), int(y0)), (int(x0) + size // 3, int(y0) + size // 4),
                      tuple(int(v) for v in rng.integers(0, 256, 3)), -1)
        cv2.line(img, (0, size - 1), (size - 1, 0), (255, 255, 255), max(1, size // 32))
        out.append(img)
    return np.stack(out)
