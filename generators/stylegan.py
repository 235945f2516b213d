"""StyleGAN (Karras et al., "A Style-Based Generator Architecture for GANs", CVPR 2019).

Generator: 8-layer mapping network z -> w (pixel norm of z, equalized LR, lr multiplier 0.01);
synthesis from a learned 4x4 constant; every layer adds per-pixel noise with a learned
per-channel strength, a bias and leaky ReLU, then AdaIN: instance normalisation followed by the
per-channel scale and bias of a learned affine map of w. Upsampling is nearest 2x, 3x3 conv,
then a [1, 2, 1] blur (the paper's "bilinear" filtering); a 1x1 toRGB at the output resolution.
Discriminator: NVIDIA's D_basic (fromRGB; per resolution a 3x3 conv, then [1, 2, 1] blur, 3x3
conv and 2x2 average pooling, i.e. its conv2d_downscale2d, whose fused strided form at >= 128 px
is the same operation; minibatch stddev, 3x3 conv and two dense layers), fakes and reals in
separate D passes.
Loss: non-saturating logistic with R1 on reals, gamma 10 (the paper's FFHQ setting), every D
update. Style mixing regularisation with probability 0.9 in training; truncation (option
`truncation_psi`, default 1.0) towards `mapping.w_avg`, an EMA (beta 0.995) of w.

Samples come from the generator EMA (`Gs`, generators.ema), half-life 10k images as published,
with a ramp-up (see EMA). Not reproduced: progressive growing (the networks train at full
resolution from the start, as StyleGAN2 later did) and the resolution-dependent learning-rate
schedule. Widths: min(ch, ch * 32 / res), NVIDIA's fmap_base 8192 (channels 512 up to 32 px,
then halving) at ch=512.

Eval mode (sampling): per-layer noise drawn from each image's own seed (option `noise_mode`
"seeded", the default: NVIDIA's noise_mode='random' made reproducible, see
style_layers.StyleGenerator.noise_maps) or the model's stored constant maps ("const", NVIDIA's
noise_mode='const', one realisation in every image); output clamped to [-1, 1]; no cross-sample
operations (minibatch stddev is in D only), so an image depends on its seed only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators import style_layers as sl
from generators.base import parse_dataclass_options
from generators.ema import EmaSetting

NAME = "stylegan"
RESOLUTIONS = (32, 64, 128, 256)
# NVIDIA's StyleGAN training_loop: Adam betas (0, 0.99), eps 1e-8, base lr 0.001 for G and D
# (its FFHQ schedule raises the rate only from 128 px up), one D update per G update.
TRAIN_DEFAULTS = {"lr_g": 0.001, "lr_d": 0.001, "betas": (0.0, 0.99), "n_dis": 1}
# NVIDIA's StyleGAN training_loop: G_smoothing_kimg = 10, no ramp-up. The ramp-up (the later
# ema_rampup 0.05 of stylegan2-ada / stylegan3) lets a brief run's average move; it ends after
# 200k images.
EMA = EmaSetting(kimg=10.0, rampup=0.05)
BLUR_TAPS = (1, 2, 1)
# Widths halve from 32 px on: NVIDIA's fmap_base 8192 == 16384 * 1 in layer_widths' terms.
CHANNEL_MULTIPLIER = 1


@dataclasses.dataclass(frozen=True)
class StyleGANOptions:
    """Architecture and regularisation hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 512  # widest feature map (fmap_max); tests use 4-8
    dim_z: int = 512  # size of z and of w
    n_mlp: int = 8  # mapping network depth
    truncation_psi: float = dataclasses.field(default=1.0, metadata={"max": 1.0})
    mixing_prob: float = dataclasses.field(default=0.9, metadata={"max": 1.0})  # style mixing in training
    r1_gamma: float = 10.0  # R1 weight (0 disables)
    mbstd_group: int = 4  # minibatch stddev group size
    # Eval-mode noise (style_layers.NOISE_MODES): "seeded" draws each image's noise from its seed;
    # "const" uses the model's stored maps in every image (NVIDIA's noise_mode='const').
    noise_mode: str = dataclasses.field(default="seeded", metadata={"choices": sl.NOISE_MODES})


def parse_options(options: Mapping[str, Any] | None) -> StyleGANOptions:
    """Validated options, defaults filled in; unknown keys and bad values name the key."""
    return parse_dataclass_options(NAME, StyleGANOptions, options)


def options_dict(options: StyleGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


class AdaIN(nn.Module):
    """Instance-normalise each channel, then scale and shift it by a style computed from w."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        # channels: feature channels; w_dim: size of w
        self.affine = sl.EqualLinear(w_dim, 2 * channels)
        with torch.no_grad():
            self.affine.bias[:channels] = 1.0  # styles start as the identity scale

    def style(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample, per-channel (scale, bias), each (N, C)."""
        return self.affine(w).chunk(2, dim=1)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        scale, bias = self.style(w)
        x = x - x.mean(dim=(2, 3), keepdim=True)
        x = x * torch.rsqrt(x.square().mean(dim=(2, 3), keepdim=True) + 1e-8)
        return x * scale[:, :, None, None] + bias[:, :, None, None]


class SynthesisLayer(nn.Module):
    """[conv | 2x up, conv, blur | nothing (the constant)], noise, bias + lrelu, AdaIN."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, kind: str):
        super().__init__()
        # in_ch/out_ch: channels; w_dim: size of w; resolution: output side (of its noise map);
        # kind: "const" (no conv), "conv" or "up"
        assert kind in ("const", "conv", "up"), kind
        self.kind = kind
        self.conv = (None if kind == "const"
                     else sl.EqualConv2d(in_ch, out_ch, 3, bias=False, activation=False))
        self.blur = sl.Blur(BLUR_TAPS, (1, 1)) if kind == "up" else None
        self.noise = sl.NoiseInjection(out_ch, resolution)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.adain = AdaIN(out_ch, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                rng: torch.Generator | None) -> torch.Tensor:
        if self.kind == "up":
            x = self.blur(self.conv(F.interpolate(x, scale_factor=2, mode="nearest")))
        elif self.kind == "conv":
            x = self.conv(x)
        return self.adain(sl.lrelu(self.noise(x, noise, rng), self.bias), w)


class StyleGANGenerator(sl.StyleGenerator):
    """z (N, dim_z) -> image (N, 3, resolution, resolution); clamped to [-1, 1] in eval mode."""

    def __init__(self, resolution: int, options: StyleGANOptions):
        super().__init__(NAME, resolution, RESOLUTIONS, options, CHANNEL_MULTIPLIER)
        log2, widths = self.log2, self.widths
        self.const = nn.Parameter(torch.ones(1, widths[4], 4, 4))  # NVIDIA initialises it to ones
        layers = [SynthesisLayer(widths[4], widths[4], options.dim_z, 4, "const"),
                  SynthesisLayer(widths[4], widths[4], options.dim_z, 4, "conv")]
        for i in range(3, log2 + 1):
            res = 2**i
            layers.append(SynthesisLayer(widths[res // 2], widths[res], options.dim_z, res, "up"))
            layers.append(SynthesisLayer(widths[res], widths[res], options.dim_z, res, "conv"))
        self.layers = nn.ModuleList(layers)
        self.to_rgb = sl.EqualConv2d(widths[resolution], 3, 1, activation=False)
        self.num_ws = len(layers)  # one w per layer (2 per resolution)
        self.rng = sl.training_rng()

    def synthesis(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-layer latents (N, num_ws, w_dim) -> image (N, 3, R, R), before any clamping; `noise`:
        None (random in training, the stored maps in eval) or one (N, 1, r, r) map per layer."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws, tuple(ws.shape)
        noise = [None] * len(self.layers) if noise is None else noise
        assert len(noise) == len(self.layers), (len(noise), len(self.layers))
        rng = self.rng if self.training else None
        x = self.const.repeat(ws.shape[0], 1, 1, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise[i], rng)
        return self.to_rgb(x)


# The family's losses: non-saturating logistic plus R1 on reals at every D update.
discriminator_loss = sl.discriminator_loss
generator_loss = sl.generator_loss


def build_generator(resolution: int, options: StyleGANOptions) -> StyleGANGenerator:
    return StyleGANGenerator(resolution, options)


def build_discriminator(resolution: int, options: StyleGANOptions) -> sl.StyleDiscriminator:
    sl.check_power_of_two(NAME, resolution, RESOLUTIONS)
    widths = sl.layer_widths(resolution, options.ch, CHANNEL_MULTIPLIER)
    return sl.StyleDiscriminator(resolution, widths, residual=False, taps=BLUR_TAPS,
                                 r1_gamma=options.r1_gamma, r1_interval=1,
                                 mbstd_group=options.mbstd_group, pool=True)
