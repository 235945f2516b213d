"""ProGAN (Karras et al., ICLR 2018, "Progressive Growing of GANs for Improved Quality, Stability,
and Variation"): networks grown from 4x4 to the target resolution with fade-in, pixel norm,
minibatch standard deviation, equalized learning rate, WGAN-GP loss with a drift term.

Architecture, as in the paper's Table 2 and the authors' code (tkarras/progressive_growing_of_gans):

* generator: latent -> pixel norm -> dense to a 4x4 map -> 3x3 conv; then per resolution a block
  of 2x nearest upsampling and two 3x3 convs; every conv is followed by leaky ReLU 0.2 and pixel
  norm. Each resolution has its own 1x1 toRGB with a linear output (no tanh).
* discriminator, the mirror: a 1x1 fromRGB per resolution, blocks of two 3x3 convs and 2x2
  average pooling, and a 4x4 head: minibatch standard deviation (groups of 4, one appended
  feature map), 3x3 conv, dense, dense to one score. Leaky ReLU 0.2 throughout.
* equalized learning rate: every weight is stored N(0, 1) and multiplied at run time by He's
  constant gain / sqrt(fan_in) (gain sqrt(2), 1 for toRGB and the last dense, sqrt(2)/4 for the
  latent's dense layer, as the authors do); biases start at zero.
* channel plan: the authors' nf(stage) = min(fmap_base / 2**stage, fmap_max) with the map at
  resolution 2**r having nf(r - 1) channels. ``ch`` is fmap_max, the widest map, and fmap_base is
  16 * ch, so the published ch=512 gives 512 channels up to 32 px, 256 at 64 px and 128 at 128 px
  (the first levels of the paper's 1024 px CelebA-HQ network); widths never go below 1.
* loss: WGAN-GP with lambda 10 plus eps_drift = 0.001 times E[D(real)^2]; Adam lr 1e-3,
  betas (0, 0.99), one D update per G update.

Progressive growing. A level is a resolution: level 0 is 4x4, level L is 4 * 2**L, the last
level is the target. ``set_progress`` splits a run's steps into 2 * levels - 1 equal phases: the
4x4 level stabilises for one phase, then each further level fades in for one phase (alpha rising
linearly from 0 to 1) and stabilises for one, as in the paper (800k images per phase there). The
last phase stabilises the target level, so training ends at the target resolution with alpha 1.
The current level and alpha are registered buffers of both networks, so a checkpoint samples
what training ended with; a freshly built network is at the target level with alpha 1. During a
fade-in the generator's image is lerp(upsample(toRGB_{L-1}(h_{L-1})), toRGB_L(block_L(h_{L-1})),
alpha) and the discriminator mirrors it on average-pooled input. Whatever the level, the
generator returns (N, 3, R, R) at the target R (the level's image upsampled, nearest) and the
discriminator accepts (N, 3, R, R) and average-pools it to the level's resolution, exactly as
the authors' networks take and give full-resolution tensors; real images are blended with their
lower-level version during a fade-in as the authors' training loop does, so real and fake match.

The checkpoint holds the authors' `Gs`, an exponential moving average of the generator's
weights (generators.ema): 0.999 per generator update as published, ramped up at the start of a
run (see EMA), the level and alpha buffers copied, not averaged.

Deviations from the published run, forced by the shared training loop (generators.training.fit):
the minibatch size is the run's, not one shrinking with resolution, and Adam's moments are not
reset when a new level starts. In training mode the generator's output is linear, as published;
in eval mode (sampling) it is clamped to [-1, 1], which is what converting to pixels does anyway.

This module is an entry of generators.ARCHITECTURES and so provides the NetworkFamily surface:
NAME, RESOLUTIONS, TRAIN_DEFAULTS, EMA, parse_options, options_dict, build_generator,
build_discriminator, discriminator_loss, generator_loss, set_progress.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators.base import GeneratorError, parse_dataclass_options
from generators.ema import EmaSetting

NAME = "progan"
RESOLUTIONS = (32, 64, 128)
# The paper's setting: Adam lr 0.001, beta1 0, beta2 0.99; one D update per G update.
TRAIN_DEFAULTS = {"lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99), "n_dis": 1}
# The authors' train.py: G_smoothing = 0.999 per minibatch. The ramp-up (NVIDIA's later
# ema_rampup 0.05) keeps a brief run's average from still holding the random initialisation;
# from update ~13.9k on the decay is exactly 0.999.
EMA = EmaSetting(beta=0.999, rampup=0.05)

GP_WEIGHT = 10.0  # lambda of the WGAN-GP gradient penalty
DRIFT_WEIGHT = 1e-3  # eps_drift: keeps real scores near zero without affecting the optimum
MBSTD_GROUP = 4  # minibatch-stddev group size, as in the authors' code
LEAKY_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8


@dataclasses.dataclass(frozen=True)
class ProGANOptions:
    """Architecture hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 512  # fmap_max, the widest feature map (fmap_base = 16 * ch); 512 is the paper's
    dim_z: int = 512  # latent size


def parse_options(options: Mapping[str, Any] | None) -> ProGANOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    return parse_dataclass_options(NAME, ProGANOptions, options)


def options_dict(options: ProGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"progan supports resolutions {RESOLUTIONS}, not {resolution}")


def level_count(resolution: int) -> int:
    """Levels from 4x4 up to `resolution`: 4 at 32 px, 5 at 64 px, 6 at 128 px."""
    return int(math.log2(resolution)) - 1


def level_resolution(level: int) -> int:
    return 4 * 2**level


def level_width(level: int, ch: int) -> int:
    """Channels of the feature map at `level`: the authors' nf(log2(res) - 1) scaled by ch."""
    stage = level + 1  # log2(4 * 2**level) - 1
    return max(1, min((16 * ch) >> stage, ch))


# ---------------------------------------------------------------------------------------------
# Layers


class EqualizedConv2d(nn.Module):
    """Conv with equalized learning rate: weight stored N(0, 1), scaled by gain / sqrt(fan_in) at run time.

    The run-time scale makes every weight's effective update size under Adam the same relative
    to its layer's dynamic range, which is the point of the trick (paper section 4.1).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, gain: float = math.sqrt(2)):
        super().__init__()
        # in_ch / out_ch: channels; kernel: odd square kernel size, padded to keep the size;
        # gain: He's gain for the following nonlinearity (sqrt(2) for leaky ReLU, 1 for linear)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = gain / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class EqualizedLinear(nn.Module):
    """Dense layer with equalized learning rate (see EqualizedConv2d)."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2)):
        super().__init__()
        # in_features / out_features: sizes; gain: He's gain, as in EqualizedConv2d
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalise each pixel's (or latent's) feature vector to unit mean square (paper section 4.2)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)


def _act(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LEAKY_SLOPE)


def mbstd_group_size(batch: int) -> int:
    """Group size for a batch: MBSTD_GROUP, or the largest divisor of `batch` below it.

    The authors require the batch to be divisible by the group; the shared loop takes any batch
    size, so a batch of 6 uses groups of 3 rather than failing.
    """
    return next(g for g in range(min(MBSTD_GROUP, batch), 0, -1) if batch % g == 0)


def minibatch_stddev(x: torch.Tensor) -> torch.Tensor:
    """Append one feature map: the mean over features and pixels of the stddev within each group.

    Groups are strided as in the authors' code: with M = N / G, group m holds samples
    m, m + M, ..., m + (G - 1) M, and every sample gets its own group's value (paper section 3).
    """
    n, c, h, w = x.shape
    group = mbstd_group_size(n)
    y = x.reshape(group, n // group, c, h, w)
    std = (y - y.mean(dim=0, keepdim=True)).pow(2).mean(dim=0).add(1e-8).sqrt()  # (M, C, H, W)
    feature = std.mean(dim=(1, 2, 3))  # (M,)
    feature = feature.repeat(group).view(n, 1, 1, 1).expand(n, 1, h, w)
    return torch.cat([x, feature], dim=1)


def _downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.avg_pool2d(x, factor)


def _upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


class _Progress(nn.Module):
    """Level and fade-in alpha kept as registered buffers, so they travel with the state_dict."""

    def _init_progress(self, resolution: int) -> None:
        self.resolution = resolution  # target side; the last level's resolution
        self.levels = level_count(resolution)  # levels 0 (4x4) .. levels - 1 (target)
        self.register_buffer("level", torch.tensor(self.levels - 1, dtype=torch.int64))
        self.register_buffer("alpha", torch.tensor(1.0))

    def set_level(self, level: int, alpha: float) -> None:
        if not 0 <= level < self.levels:
            raise GeneratorError(f"progan level {level} is outside 0..{self.levels - 1}")
        if not 0.0 <= alpha <= 1.0:
            raise GeneratorError(f"progan fade-in alpha {alpha} is outside [0, 1]")
        self.level.fill_(level)
        self.alpha.fill_(alpha)

    def _state(self) -> tuple[int, float]:
        level, alpha = int(self.level), float(self.alpha)
        if not 0 <= level < self.levels or not 0.0 <= alpha <= 1.0:
            raise GeneratorError(f"progan level {level} / alpha {alpha} out of range for "
                                 f"{self.levels} levels (corrupt buffers?)")
        return level, alpha


# ---------------------------------------------------------------------------------------------
# Generator


class GeneratorBlock(nn.Module):
    """2x nearest upsampling, then two 3x3 convs each followed by leaky ReLU and pixel norm."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: channels of the lower level's map; out_ch: channels of this level's map
        self.conv1 = EqualizedConv2d(in_ch, out_ch, 3)
        self.conv2 = EqualizedConv2d(out_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(_act(self.conv1(_upsample(x, 2))))
        return pixel_norm(_act(self.conv2(x)))


class GeneratorHead(nn.Module):
    """Normalised latent -> 4x4 map: dense (the paper's 4x4 transposed conv) and a 3x3 conv."""

    def __init__(self, dim_z: int, out_ch: int):
        super().__init__()
        # dim_z: latent size; out_ch: channels of the 4x4 map
        # gain sqrt(2)/4, as in the authors' code: the dense layer stands for a 4x4 conv.
        self.dense = EqualizedLinear(dim_z, out_ch * 16, gain=math.sqrt(2) / 4)
        self.conv = EqualizedConv2d(out_ch, out_ch, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.dense(pixel_norm(z)).view(z.shape[0], -1, 4, 4)
        x = pixel_norm(_act(x))
        return pixel_norm(_act(self.conv(x)))


class ProGANGenerator(_Progress):
    """z (N, dim_z) -> image (N, 3, resolution, resolution), drawn at the current level and alpha."""

    def __init__(self, resolution: int = 128, ch: int = 512, dim_z: int = 512):
        super().__init__()
        _check_resolution(resolution)
        self._init_progress(resolution)
        self.ch = ch  # fmap_max; see level_width
        self.dim_z = dim_z  # latent size
        widths = [level_width(k, ch) for k in range(self.levels)]
        self.head = GeneratorHead(dim_z, widths[0])
        # blocks[k] grows level k - 1 into level k; index 0 is a placeholder so indices are levels.
        self.blocks = nn.ModuleList([nn.Identity()] + [GeneratorBlock(widths[k - 1], widths[k])
                                                       for k in range(1, self.levels)])
        self.to_rgb = nn.ModuleList(EqualizedConv2d(w, 3, 1, gain=1.0) for w in widths)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        level, alpha = self._state()
        h = self.head(z)
        for k in range(1, level):
            h = self.blocks[k](h)
        if level == 0:
            image = self.to_rgb[0](h)
        else:
            image = self.to_rgb[level](self.blocks[level](h))
            if alpha < 1.0:
                previous = _upsample(self.to_rgb[level - 1](h), 2)
                image = torch.lerp(previous, image, alpha)
        image = _upsample(image, self.resolution // level_resolution(level))
        if not self.training:
            image = image.clamp(-1, 1)
        assert image.shape[1:] == (3, self.resolution, self.resolution), tuple(image.shape)
        return image


# ---------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Two 3x3 convs with leaky ReLU, then 2x2 average pooling (the mirror of GeneratorBlock)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: channels of this level's map (also the hidden width); out_ch: the lower level's
        self.conv1 = EqualizedConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualizedConv2d(in_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _downsample(_act(self.conv2(_act(self.conv1(x)))), 2)


class DiscriminatorHead(nn.Module):
    """4x4 map -> score: minibatch stddev, 3x3 conv, dense, dense to one linear output."""

    def __init__(self, in_ch: int, hidden: int):
        super().__init__()
        # in_ch: channels of the 4x4 map; hidden: width of the first dense layer (nf(0))
        self.conv = EqualizedConv2d(in_ch + 1, in_ch, 3)
        self.dense = EqualizedLinear(in_ch * 16, hidden)
        self.out = EqualizedLinear(hidden, 1, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _act(self.conv(minibatch_stddev(x)))
        x = _act(self.dense(x.flatten(1)))
        return self.out(x).squeeze(1)


class ProGANDiscriminator(_Progress):
    """image (N, 3, resolution, resolution) -> scores (N,), seen at the current level and alpha.

    Not per-sample (minibatch stddev), so real and fake batches go through separately.
    """

    def __init__(self, resolution: int = 128, ch: int = 512):
        super().__init__()
        _check_resolution(resolution)
        self._init_progress(resolution)
        self.ch = ch  # fmap_max; see level_width
        widths = [level_width(k, ch) for k in range(self.levels)]
        self.from_rgb = nn.ModuleList(EqualizedConv2d(3, w, 1) for w in widths)
        # blocks[k] shrinks level k to level k - 1; index 0 is a placeholder so indices are levels.
        self.blocks = nn.ModuleList([nn.Identity()] + [DiscriminatorBlock(widths[k], widths[k - 1])
                                                       for k in range(1, self.levels)])
        self.head = DiscriminatorHead(widths[0], max(1, min(16 * ch, ch)))
        # Draws the gradient penalty's mixing weights. Seeded from the RNG the network is built
        # on (generators.training builds it under isolated_rng(seed)), so training stays a
        # function of its seed without touching the global RNG.
        self.penalty_rng = torch.Generator("cpu").manual_seed(int(torch.randint(2**62, ()).item()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        level, alpha = self._state()
        x = _downsample(x, self.resolution // level_resolution(level))
        h = _act(self.from_rgb[level](x))
        if level > 0:
            h = self.blocks[level](h)
            if alpha < 1.0:
                previous = _act(self.from_rgb[level - 1](_downsample(x, 2)))
                h = torch.lerp(previous, h, alpha)
            for k in range(level - 1, 0, -1):
                h = self.blocks[k](h)
        return self.head(h)


def build_generator(resolution: int, options: ProGANOptions) -> ProGANGenerator:
    return ProGANGenerator(resolution, ch=options.ch, dim_z=options.dim_z)


def build_discriminator(resolution: int, options: ProGANOptions) -> ProGANDiscriminator:
    return ProGANDiscriminator(resolution, ch=options.ch)


# ---------------------------------------------------------------------------------------------
# Growth schedule


def schedule(step: int, steps: int, levels: int) -> tuple[int, float]:
    """(level, alpha) for 1-based `step` of `steps`: 2 * levels - 1 equal phases (see module doc).

    Phase 0 stabilises level 0; phase 2k - 1 fades level k in, phase 2k stabilises it. The last
    step is in the last phase, so it always lands on the final level with alpha 1.
    """
    if not 1 <= step <= steps:
        raise GeneratorError(f"progan progress step {step} is outside 1..{steps}")
    phases = 2 * levels - 1
    position = step / steps * phases  # in (0, phases]
    phase = min(int(position), phases - 1)
    level = (phase + 1) // 2
    fading = phase % 2 == 1
    return level, (position - phase) if fading else 1.0


def set_progress(gen: ProGANGenerator, disc: ProGANDiscriminator, step: int, steps: int) -> None:
    """Move both networks to the level and alpha of `step` (called before every G update)."""
    level, alpha = schedule(step, steps, gen.levels)
    gen.set_level(level, alpha)
    disc.set_level(level, alpha)


# ---------------------------------------------------------------------------------------------
# Losses


def fade_reals(real: torch.Tensor, disc: ProGANDiscriminator) -> torch.Tensor:
    """Real images as the current level sees them, at full size.

    Reduced to the level's resolution, and during a fade-in blended with their lower-level
    version by 1 - alpha (the authors' training loop does the same), so that real images go
    through the same crossfade as the generator's.
    """
    level, alpha = disc._state()
    x = _downsample(real, disc.resolution // level_resolution(level))
    if level > 0 and alpha < 1.0:
        x = torch.lerp(_upsample(_downsample(x, 2), 2), x, alpha)
    return _upsample(x, disc.resolution // level_resolution(level))


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """E[(||grad critic(x_hat)||_2 - 1)^2] with x_hat = fake + mix * (real - fake), mix (N,) in [0, 1]."""
    mix = mix.view(-1, 1, 1, 1).to(real)
    x_hat = torch.lerp(fake, real, mix).detach().requires_grad_(True)
    # create_graph: the penalty is itself differentiated in D's update.
    (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def discriminator_loss(disc: ProGANDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP critic loss with the drift term: D(fake) - D(real) + 10 GP + 0.001 D(real)^2."""
    real = fade_reals(real, disc)
    real_scores = disc(real)
    fake_scores = disc(fake)
    mix = torch.rand(len(real), generator=disc.penalty_rng)
    penalty = gradient_penalty(disc, real, fake, mix)
    return (fake_scores.mean() - real_scores.mean() + GP_WEIGHT * penalty
            + DRIFT_WEIGHT * real_scores.pow(2).mean())


def generator_loss(disc: ProGANDiscriminator, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return -disc(fake).mean()
