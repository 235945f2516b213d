"""ImageNet-C corruptions and the Yu'19 / Frank'20 attack profile on uint8 RGB batches.

`corrupt(images, name, severity, seeds)` is the one entry point. Two backends compute the 19
ImageNet-C corruptions: `engine` (this package's fast implementation, `engine.py`, the default)
and `reference` (the `imagecorruptions` package itself, `reference.py`). The attacks
(`names("attacks")`) have one implementation, used by either backend.

An image's result depends on its own seed only: each backend seeds its generators per image,
so a test image's corruption is the same bytes whatever the batch split, runner or worker.
Seeds are reduced to 32 bits (the width of NumPy's legacy and Numba's seeds) on the way in.
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from benchmark.corruptions import attacks, engine, reference
from benchmark.protocol import CORRUPTIONS, SEVERITIES, UNSEEN_CORRUPTIONS, seen_corruptions

ATTACKS = tuple(attacks.ATTACKS)
BACKENDS = ("engine", "reference")
MIN_SIDE = 32


def names(subset: str = "all", unseen_set: str = "repmix") -> tuple[str, ...]:
    """Names: `all` (the 19 ImageNet-C), `seen` (15) or `unseen` (4) under the named held-out
    set, or `attacks` (the 5 Yu'19 / Frank'20 post-processing attacks)."""
    if unseen_set not in UNSEEN_CORRUPTIONS:
        raise ValueError(f"unknown unseen set {unseen_set!r}; one of {sorted(UNSEEN_CORRUPTIONS)}")
    if subset == "all":
        return CORRUPTIONS
    if subset == "seen":
        return seen_corruptions(unseen_set)
    if subset == "unseen":
        return UNSEEN_CORRUPTIONS[unseen_set]
    if subset == "attacks":
        return ATTACKS
    raise ValueError(f"unknown subset {subset!r}; one of 'all', 'seen', 'unseen', 'attacks'")


def corrupt(images: Any, name: str, severity: int, seeds: Sequence[int], *,
            backend: str = "engine", work_size: int | None = None) -> Any:
    """Apply corruption or attack `name` at `severity` (1..5) to a uint8 (N, H, W, 3) batch.

    `images` is a NumPy array or a torch tensor, returned as a tensor on the same device. The
    engine computes on the CPU (OpenCV, Numba, NumPy): a CUDA tensor is copied to the host and
    back; there are no CUDA kernels yet.
    `seeds` has one integer per image. `work_size`, when given, corrupts a bilinear resize to
    work_size x work_size and brings the result back with area averaging (the RepMix route:
    its code corrupts 224 px inputs); see `resize_route`.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    if name not in CORRUPTIONS and name not in ATTACKS:
        raise ValueError(f"unknown corruption {name!r}; one of {', '.join(CORRUPTIONS + ATTACKS)}")
    if isinstance(severity, bool) or severity not in SEVERITIES:
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    device = None
    if type(images).__module__.startswith("torch"):
        device = images.device
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    if x.dtype != np.uint8:
        raise ValueError(f"images: expected dtype uint8, got {x.dtype}")
    if x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"images: expected shape (N, H, W, 3), got {x.shape}")
    if min(x.shape[1:3]) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE} px, got {x.shape[2]}x{x.shape[1]}")
    if len(seeds) != len(x):
        raise ValueError(f"{len(seeds)} seeds for {len(x)} images")
    if work_size is not None and work_size < MIN_SIDE:
        raise ValueError(f"work_size must be at least {MIN_SIDE} px, got {work_size}")
    seeds32 = [int(s) % 2**32 for s in seeds]
    x = np.ascontiguousarray(x)
    size = x.shape[1:3]
    if work_size is not None:
        x = resize_route(x, (work_size, work_size))
    if name in ATTACKS:
        out = attacks.corrupt(x, name, seeds32)
    elif backend == "engine":
        out = engine.corrupt(x, name, severity, seeds32)
    else:
        out = reference.corrupt(x, name, severity, seeds32)
    if work_size is not None:
        out = resize_route(out, size)
    if device is not None:
        import torch

        return torch.from_numpy(out).to(device)
    return out


def resize_route(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a uint8 batch to (H, W) = `size`: bilinear when enlarging (what torchvision's
    Resize, used by the RepMix loader, does), area averaging when shrinking (it averages the
    corruption's high-frequency noise instead of aliasing it, which bilinear would)."""
    h, w = size
    out = []
    for img in x:
        shrink = h * w < img.shape[0] * img.shape[1]
        method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        out.append(cv2.resize(img, (w, h), interpolation=method))
    return np.stack(out)
