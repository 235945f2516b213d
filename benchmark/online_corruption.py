"""The online corruption policy: which corruption a training image gets in a given epoch, and
the one function that applies a choice to an image (the build's ApplyCorruptions stage calls it
too, so a stored val/test image and an online-corrupted train image go the same route).

The released RepMix loader corrupts each training image with probability 0.95, with one of the
seen ImageNet-C corruptions drawn uniformly, at a severity uniform in 1..5. Here the draw is a
function of (seed, key, epoch): a sample gets another corruption each epoch, and the same one
when the run is repeated, whatever the worker or the order the loader meets it in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from benchmark.corruption_policy import CLEAN, CorruptionChoice, draw_choice
from benchmark.corruptions import corrupt
from benchmark.keys import derive_seed
from benchmark.protocol import APPLY_AT_WORK_SIZE, CORRUPTIONS, SEVERITIES


def choose_online(key: str, epoch: int, seed: int, *, corruptions: Sequence[str],
                  probability: float = 0.95,
                  severities: Sequence[int] = SEVERITIES) -> CorruptionChoice:
    """The corruption sample `key` gets in `epoch`: CLEAN with probability 1 - `probability`,
    else one of `corruptions` (uniform, in the order given) at a severity uniform over
    `severities`, with its own noise seed."""
    corruptions, severities = tuple(corruptions), tuple(severities)
    if not corruptions:
        raise ValueError("corruptions: empty; give the names to draw from "
                         "(e.g. benchmark.corruptions.names('seen'))")
    unknown = [c for c in corruptions if c not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"corruptions: unknown {unknown}; one of {', '.join(CORRUPTIONS)}")
    if not severities or any(isinstance(s, bool) or s not in SEVERITIES for s in severities):
        raise ValueError(f"severities must be values in 1..5, got {severities}")
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
    # The epoch is part of the purpose, so each epoch is an independent draw; the purposes
    # differ from the offline policy's ("corruption"), so a val key never repeats its draw.
    return draw_choice(derive_seed(seed, f"online-corruption-{int(epoch)}", key),
                       derive_seed(seed, f"online-corruption-noise-{int(epoch)}", key),
                       corruptions, probability, severities)


def corrupt_image(image: np.ndarray, choice: CorruptionChoice, *, apply_at: str,
                  backend: str = "engine") -> np.ndarray:
    """`image` (uint8 H x W x 3) with `choice` applied, the same shape; a CLEAN choice returns
    `image` itself. `apply_at` is the build's route (its corruptions section): `stored`
    corrupts at the stored size, `resized_224` a bilinear 224 px enlargement brought back down
    by area averaging. `backend`: `engine` or `reference` (benchmark.corruptions)."""
    if apply_at not in APPLY_AT_WORK_SIZE:
        raise ValueError(f"apply_at must be one of {sorted(APPLY_AT_WORK_SIZE)}, got {apply_at!r}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    if choice.name == CLEAN:
        return image
    return corrupt(image[None], choice.name, choice.severity, [choice.seed], backend=backend,
                   work_size=APPLY_AT_WORK_SIZE[apply_at])[0]
