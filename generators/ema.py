"""An exponential moving average (EMA) of a generator's weights, the network published samples come from.

ProGAN (`Gs`), StyleGAN 1-3 (`Gs` / `G_ema`) and DDPM sample from an EMA copy of the trained
generator, not from the generator the optimiser moves; the EMA's images are smoother and
better, so its fingerprints are the ones the papers' images carry. After every generator
update each parameter of the copy moves as ema = beta * ema + (1 - beta) * g, and every buffer
(StyleGAN's tracked w_avg, ProGAN's level and alpha, StyleGAN3's magnitude EMAs) is copied
unchanged, as NVIDIA's loops do: a buffer is the generator's own state, not a weight to smooth.

How fast the copy forgets (EmaSetting) is each family's published setting:

* a half-life in images, NVIDIA's `ema_kimg` (`G_smoothing_kimg` in StyleGAN 1/2):
  beta = 0.5 ** (batch_size / (1000 * kimg)), so the setting does not depend on the batch size;
* or a fixed beta per update (ProGAN's `G_smoothing` 0.999, DDPM's 0.9999);
* optionally NVIDIA's ramp-up `ema_rampup` (stylegan2-ada-pytorch / stylegan3
  training_loop.py): the half-life is at most rampup * the images seen before this update, so
  the average never reaches back to the random initialisation and a brief run still ends with
  weights that moved; a long run ends where it would without ramp-up;
* or the warm-up of tf.train.ExponentialMovingAverage with num_updates, beta <= (1 + n) / (10 + n)
  after n updates, which DDPM here has always used.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import torch
from torch import nn

from generators.base import GeneratorError


@dataclasses.dataclass(frozen=True)
class EmaSetting:
    """How fast a generator's EMA forgets; exactly one of `kimg` and `beta`. Recorded in the sidecar."""

    kimg: float | None = None  # half-life in thousands of images (NVIDIA's ema_kimg)
    beta: float | None = None  # fixed decay per generator update, in [0, 1)
    # `kimg` holds at this batch size and scales with the run's (StyleGAN3's train.py sets
    # ema_kimg = batch * 10 / 32); None: `kimg` holds at any batch size.
    reference_batch: int | None = None
    rampup: float | None = None  # NVIDIA's ema_rampup: half-life <= rampup * images seen so far
    warmup: bool = False  # beta <= (1 + n) / (10 + n) after n updates (TF's num_updates)

    def __post_init__(self) -> None:
        if (self.kimg is None) == (self.beta is None):
            raise GeneratorError(f"EMA setting needs exactly one of kimg and beta, got kimg={self.kimg!r}, "
                                 f"beta={self.beta!r}")
        if self.kimg is not None and not (_is_number(self.kimg) and self.kimg > 0):
            raise GeneratorError(f"EMA kimg must be a positive number, not {self.kimg!r}")
        if self.beta is not None and not (_is_number(self.beta) and 0 <= self.beta < 1):
            raise GeneratorError(f"EMA beta must be a number in [0, 1), not {self.beta!r}")
        if self.reference_batch is not None:
            if self.kimg is None:
                raise GeneratorError("EMA reference_batch scales kimg; it needs kimg, not beta")
            if isinstance(self.reference_batch, bool) or not isinstance(self.reference_batch, int) \
                    or self.reference_batch < 1:
                raise GeneratorError(f"EMA reference_batch must be a positive integer, not {self.reference_batch!r}")
        if self.rampup is not None and not (_is_number(self.rampup) and self.rampup > 0):
            raise GeneratorError(f"EMA rampup must be a positive number or None, not {self.rampup!r}")
        if not isinstance(self.warmup, bool):
            raise GeneratorError(f"EMA warmup must be true or false, not {self.warmup!r}")

    def decay(self, step: int, batch_size: int) -> float:
        """beta of the EMA update that follows generator update `step` (1-based) of `batch_size` images."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise GeneratorError(f"EMA step must be a positive integer, not {step!r}")
        if self.beta is not None:
            beta = self.beta
        else:
            scale = 1.0 if self.reference_batch is None else batch_size / self.reference_batch
            beta = 0.5 ** (batch_size / (self.kimg * 1000 * scale))
        if self.rampup is not None:
            # NVIDIA's cur_nimg: the images of the updates before this one.
            ramp_nimg = (step - 1) * batch_size * self.rampup
            # 0.5 ** x rises with the half-life, so this min is NVIDIA's min over half-lives;
            # with nothing seen yet their formula underflows to 0: the copy becomes g.
            beta = min(beta, 0.5 ** (batch_size / ramp_nimg)) if ramp_nimg > 0 else 0.0
        if self.warmup:
            beta = min(beta, (1 + step) / (10 + step))
        return beta


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


class GeneratorEma:
    """An eval-mode copy of a generator that follows it by `setting` (see the module docstring).

    `module` is a ready-to-sample network of the generator's class, so progress grids and the
    checkpoint take it as they would the generator, and a training-state snapshot saves it as
    one more module.
    """

    def __init__(self, net: nn.Module, setting: EmaSetting):
        self.setting = setting  # how fast the copy forgets
        # A copy, not a fresh build: its initial weights are the generator's (NVIDIA's deepcopy),
        # and building would draw from an RNG.
        self.module = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int, batch_size: int) -> float:
        """Move the copy towards `net` after generator update `step`; returns the beta used."""
        beta = self.setting.decay(step, batch_size)
        for ema, param in zip(self.module.parameters(), net.parameters()):
            # lerp with weight 1 returns `param` exactly (torch computes end - diff * 0 there).
            ema.lerp_(param, 1 - beta)
        for ema, buffer in zip(self.module.buffers(), net.buffers()):
            ema.copy_(buffer)
        return beta
