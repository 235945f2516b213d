"""The post-processing attack profile of Yu et al. 2019 and Frank et al. 2020.

Each attack draws its strength per image from `np.random.Generator(PCG64(seed))`:
- noise: additive Gaussian noise, variance ~ U[5, 20] on the 0..255 scale;
- blur: Gaussian blur, kernel size from {1, 3, 5, 7, 9} (1 leaves the image as is), sigma from
  the kernel size by OpenCV's rule (0.3 * ((k - 1) / 2 - 1) + 0.8), since the papers give none;
- crop: a random crop keeping 80-95% of each side (5-20% removed, the same fraction for both
  sides so the aspect ratio holds), resized back bilinearly;
- jpeg: JPEG quality ~ U{10, ..., 75};
- combination: each of blur, crop, jpeg, noise (that fixed order) with probability 0.5.
Severity does not apply: the strength is the random draw.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np


def _noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = np.sqrt(rng.uniform(5.0, 20.0))
    noisy = img + rng.standard_normal(img.shape, np.float32) * np.float32(sigma)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _blur(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = int(rng.choice([1, 3, 5, 7, 9]))
    return img.copy() if k == 1 else cv2.GaussianBlur(img, (k, k), 0)


def _crop(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    keep = 1.0 - rng.uniform(0.05, 0.20)
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    return cv2.resize(img[top:top + ch, left:left + cw], (w, h), interpolation=cv2.INTER_LINEAR)


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    quality = int(rng.integers(10, 76))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image")
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def _combination(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    for attack in (_blur, _crop, _jpeg, _noise):
        if rng.random() < 0.5:
            img = attack(img, rng)
    return img


ATTACKS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "attack_noise": _noise, "attack_blur": _blur, "attack_crop": _crop, "attack_jpeg": _jpeg,
    "attack_combination": _combination,
}


def corrupt(x: np.ndarray, name: str, seeds: Sequence[int]) -> np.ndarray:
    """Apply attack `name` to each image of a validated uint8 (N, H, W, 3) batch."""
    attack = ATTACKS[name]
    return np.stack([attack(img, np.random.Generator(np.random.PCG64(s)))
                     for img, s in zip(x, seeds)])
