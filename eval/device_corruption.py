"""The online corruptions that are per-pixel or convolutional, as batched torch ops on the
training device, for `data.corruption_device: device`.

The loader draws each training image's corruption as before (benchmark.online_corruption:
name, severity, seed per sample key and epoch); for the names in NAMES it leaves the image clean
and records the choice, and the training step applies them here, on the batch, on the GPU. The
other seen corruptions (frost, fog, jpeg_compression, spatter, elastic_transform, pixelate) stay
in the loader. The default, `loader`, corrupts everything on the CPU, as before.

Formulas and severity tables are the CPU engine's (benchmark/corruptions/engine.py and
kernels.py, themselves the `imagecorruptions` reference's), on 0..255 levels, each result
clipped and truncated to a whole level as the reference's `np.uint8(...)`:
- brightness, saturate: the HSV round trip of kernels.hsv_edit, in float64: equal to the engine.
- contrast: (u - mean) * c + mean per channel, float64: equal to the engine.
- defocus_blur: the reference's anti-aliased disk (ops.disk_kernel), OpenCV's default
  reflect-101 border, a float64 convolution (through the FFT): equal to the engine.
- gaussian_blur: scipy's sampled Gaussian (radius int(4 sigma + 0.5)), edge-replicated, float32
  as the engine: equal but for the order of the float32 sums (a value a hair from a whole level
  may truncate the other way: < 0.05% of values, by one level).
- gaussian, shot, speckle and impulse noise: the reference's formulas with torch's draws (normal,
  Poisson, uniform), from a torch.Generator per image seeded with that image's corruption seed
  (reduced to 32 bits, as the CPU engine reduces it). The same distribution as the CPU engine,
  not the same numbers: the engine draws from PCG64 / NumPy streams no device has.

Every image's result depends on its own seed and pixels only, so a batch gives what each image
would give alone, whatever the batch composition (the tests check it).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from benchmark.corruptions import ops

NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "brightness",
         "contrast", "saturate", "gaussian_blur", "defocus_blur")
NONE = -1  # the recorded name index of an image with nothing left to do on the device


def _unit_to_levels(u: torch.Tensor) -> torch.Tensor:
    """uint8(clip(u, 0, 1) * 255) as float levels: the reference's truncating cast."""
    return torch.floor(u.clamp(0, 1) * 255)


def _levels_to_levels(v: torch.Tensor) -> torch.Tensor:
    """uint8(clip(v, 0, 255)) of 0..255 values as float levels."""
    return torch.floor(v.clamp(0, 255))


# ---------------------------------------------------------------- deterministic


def _hsv_edit(x: torch.Tensor, v_add: float, s_mul: float, s_add: float) -> torch.Tensor:
    """kernels.hsv_edit on (N, 3, H, W) levels: v' = min(v + v_add, 1), s' = clip(s * s_mul +
    s_add, 0, 1), each channel v' * (1 - s' * w) with hue weight w = (v - channel) / (v - min)
    (grey pixels: 0, 1, 1, scikit-image's hue 0). float64, as the engine."""
    u = x.double() / 255.0
    v = u.amax(1, keepdim=True)
    delta = v - u.amin(1, keepdim=True)
    s = torch.where(v > 0, delta / torch.where(v > 0, v, 1.0), 0.0)
    s2 = (s * s_mul + s_add).clamp(0, 1)
    v2 = (v + v_add).clamp(max=1.0)
    grey = torch.tensor([0.0, 1.0, 1.0], dtype=u.dtype, device=u.device).view(1, 3, 1, 1)
    weight = torch.where(delta > 0, (v - u) / torch.where(delta > 0, delta, 1.0), grey)
    return _unit_to_levels(v2 * (1.0 - s2 * weight)).to(x.dtype)


def brightness(x, severity, generators):
    c = [.1, .2, .3, .4, .5][severity - 1]
    return _hsv_edit(x, c, 1.0, 0.0)


def saturate(x, severity, generators):
    a, b = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    return _hsv_edit(x, 0.0, float(a), float(b))


def contrast(x, severity, generators):
    c = [0.4, .3, .2, .1, .05][severity - 1]
    u = x.double() / 255.0
    means = x.double().mean(dim=(2, 3), keepdim=True) / 255.0
    return _unit_to_levels((u - means) * c + means).to(x.dtype)


@lru_cache(maxsize=16)
def _gaussian_taps(sigma: float) -> np.ndarray:
    """OpenCV's float32 taps, as the engine's float32 GaussianBlur (ops.gaussian) uses them."""
    radius = int(4.0 * sigma + 0.5)  # scipy's truncate=4, as ops.gaussian
    return cv2.getGaussianKernel(2 * radius + 1, sigma, ktype=cv2.CV_32F)[:, 0]


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int, int, int],
               mode: str, dtype: torch.dtype) -> torch.Tensor:
    """Correlation of each channel with the (kh, kw) `kernel` after padding (left, right, top,
    bottom) in `mode`, in `dtype`."""
    channels = x.shape[1]
    weight = kernel.to(device=x.device, dtype=dtype).expand(channels, 1, *kernel.shape)
    return F.conv2d(F.pad(x.to(dtype), pad, mode=mode), weight, groups=channels)


def gaussian_blur(x, severity, generators):
    """Separable, rows then columns, in float32 as the engine (OpenCV): float64 would differ from
    it on ~1% of values at some severities, float32 on < 0.05%."""
    sigma = [1, 2, 3, 4, 6][severity - 1]
    taps = torch.from_numpy(_gaussian_taps(float(sigma)))
    r = len(taps) // 2
    rows = _depthwise(x, taps.view(-1, 1), (0, 0, r, r), "replicate", torch.float32)
    out = _depthwise(rows, taps.view(1, -1), (r, r, 0, 0), "replicate", torch.float32)
    return _levels_to_levels(out).to(x.dtype)


def defocus_blur(x, severity, generators):
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    kernel = torch.from_numpy(ops.disk_kernel(radius, alias).astype(np.float64))
    r = kernel.shape[0] // 2
    # OpenCV filter2D's default border is reflect-101 (dcb|abcd|cba): torch's "reflect"
    padded = F.pad(x.double(), (r, r, r, r), mode="reflect")
    return _levels_to_levels(_fft_correlate(padded, kernel) + FFT_SLACK).to(x.dtype)


# float64, as the engine: the disk sums to 1 - 4e-9 at low severities, so a flat area lands a
# hair below a whole level and truncates a level down; float32 would hide the hair. Through the
# FFT: a direct float64 convolution with a 21 x 21 kernel is 200 times slower than the engine
# on a CPU. The FFT's rounding (~1e-12 here) could put a result that is a whole level exactly
# a hair below it: FFT_SLACK lifts it back, far below the kernel's own hair.
FFT_SLACK = 1e-9


def _fft_correlate(padded: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The valid correlation of each (..., H + 2r, W + 2r) plane with a point-symmetric
    (2r + 1) x (2r + 1) kernel (so correlation is convolution), (..., H, W), via a float64 FFT."""
    k = kernel.shape[0]
    h, w = padded.shape[-2] - k + 1, padded.shape[-1] - k + 1
    size = (padded.shape[-2] + k - 1, padded.shape[-1] + k - 1)
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(
        kernel.to(device=padded.device, dtype=padded.dtype), s=size)
    full = torch.fft.irfft2(spectrum, s=size)
    return full[..., k - 1:k - 1 + h, k - 1:k - 1 + w]


# ---------------------------------------------------------------- noise


def _per_image(x: torch.Tensor, generators: Sequence[torch.Generator], draw) -> torch.Tensor:
    """Stack `draw(shape, generator)` for each image, each from its own generator."""
    return torch.stack([draw(x.shape[1:], g) for g in generators])


def gaussian_noise(x, severity, generators):
    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]
    noise = _per_image(x, generators, lambda shape, g: torch.randn(
        shape, generator=g, device=x.device, dtype=x.dtype))
    return _unit_to_levels(x / 255.0 + noise * c)


def shot_noise(x, severity, generators):
    c = [60, 25, 12, 5, 3][severity - 1]
    rates = x / 255.0 * c
    counts = torch.stack([torch.poisson(r, generator=g) for r, g in zip(rates, generators)])
    return _unit_to_levels(counts / c)


def speckle_noise(x, severity, generators):
    c = [.15, .2, 0.35, 0.45, 0.6][severity - 1]
    noise = _per_image(x, generators, lambda shape, g: torch.randn(
        shape, generator=g, device=x.device, dtype=x.dtype))
    u = x / 255.0
    return _unit_to_levels(u + u * noise * c)


def impulse_noise(x, severity, generators):
    """scikit-image's s&p: a value flips with probability `amount`, to white or black evenly."""
    amount = [.03, .06, .09, 0.17, 0.27][severity - 1]
    draws = _per_image(x, generators, lambda shape, g: torch.rand(
        (2, *shape), generator=g, device=x.device, dtype=x.dtype))
    flip, salt = draws[:, 0] <= amount, draws[:, 1] <= 0.5
    return torch.where(flip, torch.where(salt, 255.0, 0.0).to(x.dtype), x)


CORRUPTIONS = {f.__name__: f for f in (
    gaussian_noise, shot_noise, impulse_noise, speckle_noise, brightness, contrast, saturate,
    gaussian_blur, defocus_blur)}
assert tuple(CORRUPTIONS) == NAMES


# ---------------------------------------------------------------- batches


def generator(seed: int, device: torch.device | str) -> torch.Generator:
    """The image's own generator: its corruption seed reduced to 32 bits, as the CPU engine."""
    return torch.Generator(device=device).manual_seed(int(seed) % 2**32)


def corrupt(levels: torch.Tensor, names: Sequence[str], severities: Sequence[int],
            seeds: Sequence[int]) -> torch.Tensor:
    """Corrupt (N, 3, H, W) float levels 0..255 on their device, image i with names[i] at
    severities[i] (a name of NAMES, or None to leave it), seeded by seeds[i]; float levels out.
    Images sharing a corruption and severity run as one batch."""
    if levels.dim() != 4 or levels.shape[1] != 3 or not levels.is_floating_point():
        raise ValueError(f"levels: expected float (N, 3, H, W), got {levels.dtype} "
                         f"{tuple(levels.shape)}")
    if not len(names) == len(severities) == len(seeds) == len(levels):
        raise ValueError(f"{len(levels)} images but {len(names)} names, {len(severities)} "
                         f"severities, {len(seeds)} seeds")
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, (name, severity) in enumerate(zip(names, severities)):
        if name is None:
            continue
        if name not in CORRUPTIONS:
            raise ValueError(f"image {i}: {name!r} is not a device corruption; one of "
                             f"{', '.join(NAMES)}")
        if isinstance(severity, bool) or int(severity) not in (1, 2, 3, 4, 5):
            raise ValueError(f"image {i}: severity must be 1..5, got {severity!r}")
        groups[name, int(severity)].append(i)
    out = levels.clone()
    with _exact(levels.device):
        for (name, severity), index in groups.items():
            gens = [generator(seeds[i], levels.device) for i in index]
            at = torch.tensor(index, device=levels.device)
            out[at] = CORRUPTIONS[name](levels[at], severity, gens)
    return out


@contextlib.contextmanager
def _exact(device: torch.device):
    """The formulas' own precision: no autocast (the training step runs under it, which would
    blur in bf16) and no TF32 convolutions (10-bit mantissas: a quarter level off at 255)."""
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark,
                         deterministic=True, allow_tf32=False):
            yield


def record(name: str, severity: int, seed: int) -> list[int]:
    """The loader's record of one image's device corruption: [name index or NONE, severity,
    32-bit seed], int64-safe."""
    if name not in CORRUPTIONS:
        return [NONE, 0, 0]
    return [NAMES.index(name), int(severity), int(seed) % 2**32]


def apply_recorded(images: torch.Tensor, recorded: torch.Tensor | None) -> torch.Tensor:
    """The training step's hook: the loader's normalised images ((..., 3, H, W) in [-1, 1]) with
    the recorded device corruptions ((..., 3) int64, see `record`) applied, normalised again as
    eval.data.normalise does. `recorded` None (corruption_device: loader) returns `images`."""
    if recorded is None:
        return images
    if recorded.shape != (*images.shape[:-3], 3):
        raise ValueError(f"device corruption records {tuple(recorded.shape)} do not match images "
                         f"{tuple(images.shape)}")
    flat, rec = images.reshape(-1, *images.shape[-3:]), recorded.reshape(-1, 3).tolist()
    if all(r[0] == NONE for r in rec):
        return images
    levels = torch.round((flat.float() * 0.5 + 0.5) * 255.0)  # undo normalise: exact levels
    out = corrupt(levels, [NAMES[r[0]] if r[0] != NONE else None for r in rec],
                  [r[1] for r in rec], [r[2] for r in rec])
    out = out.div_(255.0).sub_(0.5).div_(0.5)  # eval.data.normalise's float arithmetic
    return out.to(images.dtype).reshape(images.shape)


__all__ = ["NAMES", "NONE", "apply_recorded", "corrupt", "generator", "record"]
