"""StyleGAN2 (Karras et al., "Analyzing and Improving the Image Quality of StyleGAN", CVPR 2020).

Generator (config E/F of the paper): 8-layer mapping network (equalized LR, lr multiplier
0.01), learned 4x4 constant, per layer a modulated 3x3 convolution with weight demodulation
(computed as one grouped convolution over the batch), a single learned noise strength and a
bias + leaky ReLU; upsampling by transposed convolution followed by a [1, 3, 3, 1] filter; the
"skip" output: a modulated 1x1 toRGB at every resolution, upsampled and summed. Discriminator:
the residual one of the paper with minibatch stddev; D sees fakes and reals in separate passes.
Loss: non-saturating logistic; R1 on reals (gamma 10, the paper's FFHQ value) and path length
regularisation (Sec. 3.2: pl_weight 2, pl_decay 0.01, on half the batch) are lazy as in
NVIDIA's stylegan2-ada-pytorch: each takes its own optimiser step, R1 every 16 D updates and
path length every 4 G updates, with the loss multiplied by the interval and that network's Adam
lr scaled by k / (k + 1) and betas raised to that power (lazy_regularizers; the loop in
generators.training runs them). Samples come from the generator EMA (G_ema, generators.ema),
half-life 10k images as published, with a ramp-up (see EMA).

Widths: min(ch, ch * 32 * channel_multiplier / res), i.e. NVIDIA's channel_base = 16384 * m,
channel_max = 512 at ch=512; channel_multiplier=2 is config-f and rosinality's default. The
parameterisation (weight shapes, equalized-LR scalings, noise buffers) matches rosinality's
stylegan2-pytorch so its `g_ema` checkpoints load through generators.external.

Sampling: truncation with `truncation_psi` (option, default 1.0) towards `mapping.w_avg`, an EMA
(beta 0.995) of w tracked during training; in eval mode the per-layer noise is drawn from each
image's own seed (option `noise_mode` "seeded", the default) or is the model's stored constant
maps ("const", NVIDIA's noise_mode='const'), and the output is clamped to [-1, 1], so an image
depends on its seed only. Style mixing (probability 0.9) and random noise are training-only and
draw from a private generator.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators import style_layers as sl
from generators.base import LazyRegularizer, parse_dataclass_options
from generators.ema import EmaSetting

NAME = "stylegan2"
RESOLUTIONS = (32, 64, 128, 256)
# The paper's setting (Appendix B / NVIDIA's config-f): Adam lr 0.002, betas (0, 0.99), one D
# update per G update.
TRAIN_DEFAULTS = {"lr_g": 0.002, "lr_d": 0.002, "betas": (0.0, 0.99), "n_dis": 1}
# stylegan2-ada-pytorch's 'stylegan2' config (config-f): ema_kimg 10, no ramp-up. The ramp-up
# (ema_rampup 0.05, its 'auto' config and stylegan3's default) lets a brief run's average move;
# it ends after 200k images.
EMA = EmaSetting(kimg=10.0, rampup=0.05)
BLUR_TAPS = (1, 3, 3, 1)


@dataclasses.dataclass(frozen=True)
class StyleGAN2Options:
    """Architecture and regularisation hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 512  # widest feature map (channel_max); tests use 4-8
    channel_multiplier: int = 2  # channel_base = 16384 * this (config-f: 2)
    dim_z: int = 512  # size of z and of w
    n_mlp: int = 8  # mapping network depth
    truncation_psi: float = dataclasses.field(default=1.0, metadata={"max": 1.0})
    mixing_prob: float = dataclasses.field(default=0.9, metadata={"max": 1.0})  # style mixing in training
    r1_gamma: float = 10.0  # R1 weight (0 disables)
    r1_interval: int = 16  # lazy regularisation: R1 every this many D updates (1 = every update)
    # Path length regularisation (Sec. 3.2; NVIDIA's StyleGAN2Loss / training_loop defaults).
    pl_weight: float = 2.0  # weight of the penalty (0 disables)
    # Lazy: its own G step every this many G updates (NVIDIA's G_reg_interval). 1 gives a PL step
    # after every update without Adam scaling (NVIDIA's non-lazy mode adds PL to the main step).
    pl_interval: int = 4
    pl_decay: float = dataclasses.field(default=0.01, metadata={"max": 1.0})  # EMA rate of pl_mean
    pl_batch_shrink: int = 2  # the penalty runs on batch_size // this latents
    mbstd_group: int = 4  # minibatch stddev group size
    # Clamp of every layer's output (NVIDIA's conv_clamp, 256 in stylegan2-ada-pytorch configs
    # that use fp16); 0 = none, as in the paper and in rosinality's port.
    conv_clamp: float = 0.0
    # Eval-mode noise (style_layers.NOISE_MODES): "seeded" draws each image's noise from its seed;
    # "const" uses the model's stored maps in every image (NVIDIA's noise_mode='const').
    noise_mode: str = dataclasses.field(default="seeded", metadata={"choices": sl.NOISE_MODES})


def parse_options(options: Mapping[str, Any] | None) -> StyleGAN2Options:
    """Validated options, defaults filled in; unknown keys and bad values name the key."""
    return parse_dataclass_options(NAME, StyleGAN2Options, options)


def options_dict(options: StyleGAN2Options) -> dict[str, Any]:
    return dataclasses.asdict(options)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by a style from w, then (optionally)
    demodulated so each output channel's weights have unit L2 norm per sample."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, *, demodulate: bool,
                 up: bool = False):
        super().__init__()
        # in_ch/out_ch: channels; kernel: square kernel size; w_dim: size of w; demodulate:
        # weight demodulation (off for toRGB); up: 2x transposed conv + [1,3,3,1] filter
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel, kernel))
        self.affine = sl.EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.demodulate = demodulate
        self.up = up
        if up:
            # Transposed conv gives 2H + k - 2; this padding brings the filtered map to 2H.
            p = len(BLUR_TAPS) - 2 - (kernel - 1)
            self.blur = sl.Blur(BLUR_TAPS, ((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def modulated_weight(self, w: torch.Tensor) -> torch.Tensor:
        """(N, out, in, k, k) per-sample weights for latents w (N, w_dim)."""
        style = self.affine(w)[:, None, :, None, None]
        weight = self.scale * self.weight * style
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
        return weight

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        weight = self.modulated_weight(w)
        _, out_ch, _, k, _ = weight.shape
        # One grouped conv over the batch: group i is sample i with its own weights.
        x = x.reshape(1, n * c, h, wd)
        if self.up:
            weight = weight.transpose(1, 2).reshape(n * c, out_ch, k, k)
            y = F.conv_transpose2d(x, weight, stride=2, groups=n)
            return self.blur(y.reshape(n, out_ch, *y.shape[2:]))
        y = F.conv2d(x, weight.reshape(n * out_ch, c, k, k), padding=k // 2, groups=n)
        return y.reshape(n, out_ch, *y.shape[2:])


class StyledLayer(nn.Module):
    """Modulated 3x3 conv, noise (one learned strength), bias, leaky ReLU."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, up: bool,
                 clamp: float = 0.0):
        super().__init__()
        # in_ch/out_ch: channels; w_dim: size of w; resolution: output side (of its noise map);
        # up: this layer doubles the resolution; clamp: output clamp (0 = none)
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, demodulate=True, up=up)
        self.noise = sl.NoiseInjection(1, resolution)
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None,
                rng: torch.Generator | None) -> torch.Tensor:
        x = sl.lrelu(self.noise(self.conv(x, w), noise, rng), self.bias)
        return x.clamp(-self.clamp, self.clamp) if self.clamp else x


class ToRGB(nn.Module):
    """Modulated (not demodulated) 1x1 conv to RGB plus bias, added to the upsampled previous image."""

    def __init__(self, in_ch: int, w_dim: int, upsample_skip: bool, clamp: float = 0.0):
        super().__init__()
        # in_ch: channels of the feature map; w_dim: size of w; upsample_skip: a previous image
        # at half the resolution comes in and is upsampled; clamp: clamp of this layer's RGB
        # (0 = none)
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.upsample = sl.Upsample(BLUR_TAPS) if upsample_skip else None
        self.clamp = clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        y = self.conv(x, w) + self.bias
        if self.clamp:
            y = y.clamp(-self.clamp, self.clamp)
        return y if skip is None else y + self.upsample(skip)


class StyleGAN2Generator(sl.StyleGenerator):
    """z (N, dim_z) -> image (N, 3, resolution, resolution); clamped to [-1, 1] in eval mode."""

    def __init__(self, resolution: int, options: StyleGAN2Options):
        super().__init__(NAME, resolution, RESOLUTIONS, options, options.channel_multiplier)
        log2, widths = self.log2, self.widths
        self.const = nn.Parameter(torch.randn(1, widths[4], 4, 4))
        # Layer 0 works at 4x4; each later resolution has an upsampling layer and a plain one.
        w_dim, clamp = options.dim_z, options.conv_clamp
        layers = [StyledLayer(widths[4], widths[4], w_dim, 4, up=False, clamp=clamp)]
        to_rgbs = [ToRGB(widths[4], w_dim, upsample_skip=False, clamp=clamp)]
        for i in range(3, log2 + 1):
            res = 2**i
            layers.append(StyledLayer(widths[res // 2], widths[res], w_dim, res, up=True, clamp=clamp))
            layers.append(StyledLayer(widths[res], widths[res], w_dim, res, up=False, clamp=clamp))
            to_rgbs.append(ToRGB(widths[res], w_dim, upsample_skip=True, clamp=clamp))
        self.layers = nn.ModuleList(layers)
        self.to_rgbs = nn.ModuleList(to_rgbs)
        # Layer j uses w index j; toRGB b uses the index after its resolution's last layer.
        self.num_ws = len(layers) + 1
        self.rng = sl.training_rng()
        self.pl_weight = options.pl_weight  # path length regularisation settings (see the options)
        self.pl_interval = options.pl_interval
        self.pl_decay = options.pl_decay
        self.pl_batch_shrink = options.pl_batch_shrink
        # The running mean length a of path_length_penalty: training state, not part of the
        # sampling network, so kept out of checkpoints (resume snapshots still hold it).
        self.register_buffer("pl_mean", torch.zeros(()), persistent=False)

    def synthesis(self, ws: torch.Tensor, noise: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Per-layer latents (N, num_ws, w_dim) -> image (N, 3, R, R), before any clamping; `noise`:
        None (random in training, the stored maps in eval) or one (N, 1, r, r) map per layer."""
        assert ws.ndim == 3 and ws.shape[1] == self.num_ws, tuple(ws.shape)
        noise = [None] * len(self.layers) if noise is None else noise
        assert len(noise) == len(self.layers), (len(noise), len(self.layers))
        rng = self.rng if self.training else None
        x = self.const.repeat(ws.shape[0], 1, 1, 1)
        x = self.layers[0](x, ws[:, 0], noise[0], rng)
        image = self.to_rgbs[0](x, ws[:, 1], None)
        for b, to_rgb in enumerate(self.to_rgbs[1:]):
            x = self.layers[2 * b + 1](x, ws[:, 2 * b + 1], noise[2 * b + 1], rng)
            x = self.layers[2 * b + 2](x, ws[:, 2 * b + 2], noise[2 * b + 2], rng)
            image = to_rgb(x, ws[:, 2 * b + 3], image)
        return image


# The family's losses: non-saturating logistic, R1 on reals (lazy per the discriminator's r1_interval).
discriminator_loss = sl.discriminator_loss
generator_loss = sl.generator_loss


def path_length_penalty(gen: StyleGAN2Generator, z: torch.Tensor) -> torch.Tensor:
    """pl_weight * mean_i (a_i - pl_mean)^2 over the first len(z) // pl_batch_shrink latents.

    a_i = |J_i^T y_i|, J_i the Jacobian of image i w.r.t. its per-layer latents ws_i, y_i an
    image of N(0, 1) / sqrt(H * W) noise; as in NVIDIA's code the squared norm is summed over
    w's size and averaged over the num_ws copies before the square root, style mixing applies,
    and pl_mean <- lerp(pl_mean, mean(a), pl_decay) is updated here, the new value being used
    (with its gradient) in the penalty.
    """
    z = z[:max(1, len(z) // gen.pl_batch_shrink)]
    ws = sl.broadcast_styles(gen.mapping(z), gen.num_ws, mixing_prob=gen.mixing_prob, mapping=gen.mapping,
                             rng=gen.rng)
    image = gen.synthesis(ws)
    y = torch.randn(image.shape, generator=gen.rng).to(image) / math.sqrt(image.shape[2] * image.shape[3])
    (grad,) = torch.autograd.grad((image * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    pl_mean = gen.pl_mean.lerp(lengths.mean(), gen.pl_decay)
    with torch.no_grad():
        gen.pl_mean.copy_(pl_mean)
    return (lengths - pl_mean).square().mean() * gen.pl_weight


def lazy_regularizers(gen: StyleGAN2Generator, disc: sl.StyleDiscriminator) -> dict[str, LazyRegularizer]:
    """Lazy R1 for D (every r1_interval updates) and path length for G (every pl_interval)."""
    regs = sl.lazy_regularizers(gen, disc)
    if gen.pl_weight > 0:
        regs["g"] = LazyRegularizer(gen.pl_interval, lambda z: path_length_penalty(gen, z))
    return regs


def build_generator(resolution: int, options: StyleGAN2Options) -> StyleGAN2Generator:
    return StyleGAN2Generator(resolution, options)


def build_discriminator(resolution: int, options: StyleGAN2Options) -> sl.StyleDiscriminator:
    sl.check_power_of_two(NAME, resolution, RESOLUTIONS)
    widths = sl.layer_widths(resolution, options.ch, options.channel_multiplier)
    return sl.StyleDiscriminator(resolution, widths, residual=True, taps=BLUR_TAPS,
                                 r1_gamma=options.r1_gamma, r1_interval=options.r1_interval,
                                 mbstd_group=options.mbstd_group)
