"""SNGAN (Miyato et al., ICLR 2018): ResNet generator, spectrally normalised ResNet discriminator, hinge loss.

Channel plans follow the authors' chainer code (sngan_projection) and Mimicry: the 32 px
networks are the CIFAR-10 ones (constant width), the 64/128 px ones the ImageNet ones
(width halving as resolution doubles). ``ch`` scales every width; ch=64 is the published size,
tests use tiny widths. Initialisation is Xavier-uniform with gain sqrt(2) on residual convs and
1 elsewhere, as in those implementations.

This module is an entry of generators.ARCHITECTURES and so provides the NetworkFamily surface:
NAME, RESOLUTIONS, TRAIN_DEFAULTS, parse_options, options_dict, build_generator,
build_discriminator, discriminator_loss, generator_loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from generators.base import GeneratorError, parse_dataclass_options

NAME = "sngan"
RESOLUTIONS = (32, 64, 128)
# The paper's ResNet setting: Adam lr 2e-4, betas (0, 0.9), 5 D updates per G update.
TRAIN_DEFAULTS = {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.0, 0.9), "n_dis": 5}

# Width multipliers of `ch`: entry 0 is the 4x4 map after the linear layer, entry i the output
# of up-block i, so there are log2(resolution / 4) blocks.
GENERATOR_WIDTHS = {
    32: (4, 4, 4, 4),
    64: (16, 8, 4, 2, 1),
    128: (16, 16, 8, 4, 2, 1),
}
# Discriminator: width multiplier of the optimized first block, then (width, downsample) per
# following block. The 32 px net keeps 8x8 maps for its last two blocks, as published.
DISCRIMINATOR_PLANS = {
    32: (2, ((2, True), (2, False), (2, False))),
    64: (1, ((2, True), (4, True), (8, True), (16, True))),
    128: (1, ((2, True), (4, True), (8, True), (16, True), (16, False))),
}


@dataclasses.dataclass(frozen=True)
class SNGANOptions:
    """Architecture hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 64  # base channel width; 64 is the paper's, small values make fast tests
    dim_z: int = 128  # latent size


def parse_options(options: Mapping[str, Any] | None) -> SNGANOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    return parse_dataclass_options(NAME, SNGANOptions, options)


def options_dict(options: SNGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"sngan supports resolutions {RESOLUTIONS}, not {resolution}")


def _xavier(module: nn.Conv2d | nn.Linear, gain: float) -> nn.Module:
    nn.init.xavier_uniform_(module.weight, gain)
    nn.init.zeros_(module.bias)
    return module


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class GeneratorBlock(nn.Module):
    """Pre-activation up-block: BN, ReLU, 2x nearest up, 3x3 conv, BN, ReLU, 3x3 conv, plus 1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: channels of the incoming map; out_ch: channels after the block (also the hidden width)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = _xavier(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _xavier(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2))
        # Every block upsamples, so the shortcut always needs a learned projection.
        self.shortcut = _xavier(nn.Conv2d(in_ch, out_ch, 1), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_upsample(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(_upsample(x))


class ResNetGenerator(nn.Module):
    """z (N, dim_z) -> image (N, 3, resolution, resolution) in [-1, 1]."""

    def __init__(self, resolution: int = 128, ch: int = 64, dim_z: int = 128):
        super().__init__()
        _check_resolution(resolution)
        self.resolution = resolution  # output side; sets the number of up-blocks
        self.ch = ch  # base width, multiplied by GENERATOR_WIDTHS[resolution]
        self.dim_z = dim_z  # latent size the linear layer expects
        widths = [ch * m for m in GENERATOR_WIDTHS[resolution]]
        self.linear = _xavier(nn.Linear(dim_z, 4 * 4 * widths[0]), 1.0)
        self.blocks = nn.Sequential(*(GeneratorBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.bn = nn.BatchNorm2d(widths[-1])
        self.to_rgb = _xavier(nn.Conv2d(widths[-1], 3, 3, padding=1), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        h = self.linear(z).view(z.shape[0], -1, 4, 4)
        h = self.blocks(h)
        x = torch.tanh(self.to_rgb(F.relu(self.bn(h))))
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        return x


class DiscriminatorBlock(nn.Module):
    """Pre-activation down-block: ReLU, 3x3 conv, ReLU, 3x3 conv, optional 2x2 avg-pool, plus shortcut."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool):
        super().__init__()
        # in_ch: incoming channels (also the hidden width, as published); out_ch: outgoing channels
        # downsample: halve the spatial size with average pooling
        self.downsample = downsample
        self.conv1 = spectral_norm(_xavier(nn.Conv2d(in_ch, in_ch, 3, padding=1), math.sqrt(2)))
        self.conv2 = spectral_norm(_xavier(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2)))
        # An identity shortcut only fits when neither width nor size changes.
        self.shortcut = (spectral_norm(_xavier(nn.Conv2d(in_ch, out_ch, 1), 1.0))
                         if in_ch != out_ch or downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(F.relu(x))))
        s = x if self.shortcut is None else self.shortcut(x)
        if self.downsample:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class OptimizedBlock(nn.Module):
    """First discriminator block: no leading ReLU on raw pixels, pool before the shortcut conv."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: image channels (3); out_ch: width of the first feature map
        self.conv1 = spectral_norm(_xavier(nn.Conv2d(in_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.conv2 = spectral_norm(_xavier(nn.Conv2d(out_ch, out_ch, 3, padding=1), math.sqrt(2)))
        self.shortcut = spectral_norm(_xavier(nn.Conv2d(in_ch, out_ch, 1), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.avg_pool2d(self.conv2(F.relu(self.conv1(x))), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))


class ResNetDiscriminator(nn.Module):
    """image (N, 3, resolution, resolution) in [-1, 1] -> logits (N,)."""

    def __init__(self, resolution: int = 128, ch: int = 64):
        super().__init__()
        _check_resolution(resolution)
        self.resolution = resolution  # input side the block plan is made for
        self.ch = ch  # base width, multiplied by DISCRIMINATOR_PLANS[resolution]
        first, plan = DISCRIMINATOR_PLANS[resolution]
        blocks: list[nn.Module] = [OptimizedBlock(3, ch * first)]
        width = ch * first
        for mult, down in plan:
            blocks.append(DiscriminatorBlock(width, ch * mult, down))
            width = ch * mult
        self.blocks = nn.Sequential(*blocks)
        self.linear = spectral_norm(_xavier(nn.Linear(width, 1), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pool, as published
        return self.linear(h).squeeze(1)


def build_generator(resolution: int, options: SNGANOptions) -> ResNetGenerator:
    return ResNetGenerator(resolution, ch=options.ch, dim_z=options.dim_z)


def build_discriminator(resolution: int, options: SNGANOptions) -> ResNetDiscriminator:
    return ResNetDiscriminator(resolution, ch=options.ch)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss: push real logits above +1 and fake logits below -1."""
    # One pass over real and fake together: one spectral-norm power iteration per update.
    logits = disc(torch.cat([real, fake]))
    return F.relu(1 - logits[:len(real)]).mean() + F.relu(1 + logits[len(real):]).mean()


def generator_loss(disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return -disc(fake).mean()
