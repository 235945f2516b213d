"""Building blocks of the fast corruption engine: blurs, zooms, shifts, height maps, draws.

Each reproduces a step of the `imagecorruptions` reference with a faster route (OpenCV filters
in float32, index gathers instead of spline resampling, compiled loops from kernels.py), keeping
the reference's arithmetic: the same kernels, borders, coordinate maps and draw order.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from benchmark.corruptions import kernels, legacy_random

# scipy/scikit-image border modes and their OpenCV names.
BORDER_NEAREST = cv2.BORDER_REPLICATE  # scipy 'nearest': aaa|abc
BORDER_REFLECT = cv2.BORDER_REFLECT  # scipy 'reflect': cba|abc


def gaussian(x: np.ndarray, sigma: float | tuple[float, float], truncate: float = 4.0,
             border: int = BORDER_NEAREST) -> np.ndarray:
    """scikit-image `gaussian` (scipy `gaussian_filter`) on a (H, W) or (H, W, C) float array.

    scipy's kernel radius is int(truncate * sigma + 0.5) per axis; OpenCV builds the same
    normalised sampled Gaussian from an explicit size, so the two filters agree to float rounding.
    """
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    ky = 2 * int(truncate * sy + 0.5) + 1
    kx = 2 * int(truncate * sx + 0.5) + 1
    return cv2.GaussianBlur(x, (kx, ky), sigmaX=float(sx), sigmaY=float(sy), borderType=border)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk for defocus blur (a normalised disk, Gaussian-smoothed)."""
    half = 8 if radius <= 8 else int(radius)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = np.asarray(xx ** 2 + yy ** 2 <= radius ** 2, dtype=np.float32)
    disk /= disk.sum()
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def motion_offsets(radius: int, sigma: float, angle: float, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, weight) arrays of the taps of the reference's motion blur along `angle` degrees.

    The reference sums `weight * shift(x, dx, dy)` over taps and stops at the first tap whose
    shift reaches past the image; the same taps and stop rule are kept here (the same float64
    operations as its scalar loop, on all taps at once).
    """
    size = 2 * radius + 1
    taps = np.exp(-(np.arange(size) ** 2) / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    taps = taps / taps.sum()
    py, px = size * np.sin(np.deg2rad(angle)), size * np.cos(np.deg2rad(angle))
    hypot = math.hypot(py, px)
    steps = np.arange(size, dtype=np.float64)
    dys = -np.ceil(((steps * py) / hypot) - 0.5).astype(np.int64)
    dxs = -np.ceil(((steps * px) / hypot) - 0.5).astype(np.int64)
    past = np.flatnonzero((np.abs(dys) >= height) | (np.abs(dxs) >= width))
    n = past[0] if past.size else size
    return dys[:n], dxs[:n], taps[:n].astype(np.float32)


def motion_blur(x: np.ndarray, offsets: tuple[np.ndarray, np.ndarray, np.ndarray]
                ) -> np.ndarray:
    """Sum of edge-clamped shifted copies of a float32 (H, W[, C]) image:
    out[y, x] = sum w * img[clamp(y - dy), clamp(x - dx)], the reference's `_motion_blur`
    without a full-image roll per tap: one replicate-padded copy, then a compiled shift-add."""
    dys, dxs, weights = offsets
    img = x if x.ndim == 3 else x[..., None]
    reach = int(max(np.abs(dys).max(), np.abs(dxs).max()))
    padded = cv2.copyMakeBorder(img, reach, reach, reach, reach, cv2.BORDER_REPLICATE)
    if padded.ndim == 2:  # OpenCV drops a single channel axis
        padded = padded[..., None]
    out = kernels.shift_sum(np.ascontiguousarray(padded, np.float32), reach, dys, dxs, weights,
                            img.shape[0], img.shape[1])
    return out if x.ndim == 3 else out[..., 0]


def zoom_crop(size: int, zoom: float) -> tuple[int, int, int]:
    """(start, length, zoomed length) of the reference's clipped_zoom along one axis: it crops
    ceil(size/zoom) pixels around the centre and scipy zooms them to round(length*zoom)."""
    crop = int(np.ceil(size / float(zoom)))
    return (size - crop) // 2, crop, int(round(crop * zoom))


@lru_cache(maxsize=256)
def zoom_taps(size: int, zoom: float, full: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs and weights of scipy `zoom(order=1)` on the reference's centred crop, 1 axis.

    The reference crops ceil(size/zoom) pixels around the centre and zooms them to
    round(crop*zoom) with the corner-aligned map in = out*(crop-1)/(out-1); zoom blur then
    keeps the first `size` outputs, snow all of them (`full`).
    """
    crop = int(np.ceil(size / float(zoom)))
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    n = out if full else min(out, size)
    coords = np.arange(n, dtype=np.float64) * ((crop - 1) / (out - 1) if out > 1 else 0.0)
    lo = np.minimum(np.floor(coords).astype(np.int64), crop - 1)
    hi = np.minimum(lo + 1, crop - 1)
    frac = (coords - lo).astype(np.float32)
    return lo + top, hi + top, frac


def clipped_zoom(x: np.ndarray, zoom: float, full: bool = False) -> np.ndarray:
    """The reference's `clipped_zoom` on (H, W, ...) arrays: centre crop, bilinear zoom.

    Bilinear zoom is separable, so two 1-D gathers with their weights replace scipy's general
    N-d resampler. `full` keeps the whole zoomed crop (which can exceed H x W by a pixel or two)
    as the reference's snow does; otherwise the result is cut to H x W as zoom blur does.
    """
    ylo, yhi, fy = zoom_taps(x.shape[0], zoom, full)
    xlo, xhi, fx = zoom_taps(x.shape[1], zoom, full)
    shape_y = (-1,) + (1,) * (x.ndim - 1)
    shape_x = (1, -1) + (1,) * (x.ndim - 2)
    rows = x[ylo] + (x[yhi] - x[ylo]) * fy.reshape(shape_y)
    return rows[:, xlo] + (rows[:, xhi] - rows[:, xlo]) * fx.reshape(shape_x)


def plasma_fractal(seed: int, mapsize: int, wibbledecay: float) -> np.ndarray:
    """The reference's diamond-square height map, drawing as `np.random.seed(seed)` then the
    reference's calls would.

    The reference calls `np.random.uniform(-wibble, wibble, shape)` level by level for the
    squares, then the two sets of diamonds. The legacy uniform is low + (high - low) *
    random_sample(), so one stream of random_sample values (drawn in compiled code,
    legacy_random.py) yields the same numbers, which the compiled kernel consumes in order.
    """
    count = 0
    step = mapsize
    while step >= 2:
        count += 3 * (mapsize // step) ** 2
        step //= 2
    draws = legacy_random.uniforms(seed, np.empty(count), 0.0, 1.0)
    return kernels.plasma(draws, mapsize, wibbledecay)


PILLOW_PRECISION_BITS = 22  # Pillow's 8-bit resampling: 32 - 8 - 2 fraction bits


@lru_cache(maxsize=64)
def pillow_box_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first input, input count, fixed-point weights) per output of Pillow's BOX resampling
    along one axis, computed as its `precompute_coeffs` and `normalize_coeffs_8bpc` do: double
    box weights over [center - support, center + support), normalised, then rounded half away
    from zero to 22-bit fixed point. Pillow's own BOX resize costs more than the whole engine
    step; with these taps kernels.box_resample gives its bytes."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    starts = np.zeros(size_out, np.int64)
    counts = np.zeros(size_out, np.int64)
    weights = np.zeros((size_out, ksize), np.int32)
    for out in range(size_out):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        count = min(int(center + support + 0.5), size_in) - first
        taps = [1.0 if -0.5 < (x + first - center + 0.5) / filterscale <= 0.5 else 0.0
                for x in range(count)]
        total = sum(taps)
        for x, tap in enumerate(taps):
            tap = tap / total if total != 0.0 else tap
            fixed = tap * (1 << PILLOW_PRECISION_BITS)
            weights[out, x] = int(fixed - 0.5) if tap < 0 else int(fixed + 0.5)
        starts[out], counts[out] = first, count
    return starts, counts, weights
