"""Generators and feature-vector critic shared by MMD GAN and Cramér GAN.

Both families come from the same code base (Bińkowski, Sutherland, Arbel & Gretton,
"Demystifying MMD GANs", ICLR 2018; mbinkowski/MMD-GAN, ``gan/core/architecture.py``), and
both use the same networks; only the losses differ (generators.mmdgan, generators.cramergan).
This module holds the networks, the option parsing they share and the gradient penalty on
interpolates that both critics get. The network follows the resolution as the authors' run
scripts choose it: ``--architecture=dcgan`` at 32 and 64 px (cifar10.sh, lsun.sh) and
``g_resnet5`` at high resolution (celeba.sh at 160 px; Yu et al.'s GANFingerprints README trains
the 128 px MMD GAN and Cramér GAN of Attribution88 with it). In the authors' code g_resnet5 pairs
the ResNet generator with the DCGAN5 critic.

DCGAN generator (32 and 64 px, and 128 px with the option generator_128 = "dcgan5"; the
repository's ``DCGANGenerator`` / ``DCGAN5Generator``): a linear projection of z to a 4x4 map,
BatchNorm, ReLU, then 5x5 stride-2 transposed convolutions each followed by BatchNorm and
ReLU, and a last 5x5 stride-2 transposed convolution to RGB. Widths halve as the resolution
doubles and the last hidden map has ``ch`` channels at 64 and 128 px (the repository's
``gf_dim``): 8ch..ch at 64 px, 16ch..ch at 128 px. At 32 px the repository starts from a 2x2
map; here it starts at 4x4 like every other resolution (8ch, 4ch, 2ch: the usual CIFAR-10
DCGAN). The output is tanh (the repository used a sigmoid for [0, 1] images); it stays so that
existing 32/64 px checkpoints keep their images.

ResNet generator (128 px by default; the repository's ``ResNetGenerator``): linear layer to a
4x4 map of 16ch channels, four pre-activation residual up-blocks (BN, ReLU, nearest 2x, 3x3
conv, BN, ReLU, 3x3 conv; shortcut nearest 2x + 1x1 conv) to 64x64 at ch, BN, ReLU, and one 5x5
stride-2 transposed convolution to RGB. Its output is tanh(h / 2) = 2 sigmoid(h) - 1: the
repository's sigmoid carried into our [-1, 1] range. Its initialisation is the repository's:
uniform He for the block convolutions, uniform Glorot for the shortcuts, N(0, 0.01) for the
linear layer, N(0, 0.02) for the transposed convolution, zero biases.

In eval mode BatchNorm uses its running statistics, so image s depends on latent s only (the
repository samples with batch statistics, which makes an image depend on its batch).

Critic (the repository's ``DCGANDiscriminator`` / ``DCGAN5Discriminator``): 5x5 stride-2
convolutions with leaky ReLU (slope 0.2), widths ch, 2ch, 4ch, 8ch (and 16ch at 128 px), then
a linear layer from the flattened map to a ``feature_dim`` vector h(x). There is no
normalisation: the repository drops the critic's BatchNorm whenever a gradient penalty is
used, and a per-sample penalty needs a critic without cross-sample operations.

The DCGAN layers are initialised like the DCGAN code the repository builds on: weights
N(0, 0.02), biases zero, BatchNorm scale 1 and shift 0 (the repository itself draws the
critic's convolutions from a truncated normal and its linear layers from N(0, 0.01)). PyTorch
pads 5x5/stride-2 convolutions symmetrically (2 on each side) where TensorFlow's "SAME" pads 1
before and 2 after; the layer sizes are the same.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators.base import GeneratorError, parse_dataclass_options

RESOLUTIONS = (32, 64, 128)
# Multipliers of `ch` for the generator's hidden maps: entry 0 is the 4x4 map after the linear
# layer, each further entry the map after one transposed convolution; one more transposed
# convolution then makes the RGB image, so there are log2(resolution / 4) of them in all.
GENERATOR_WIDTHS = {
    32: (8, 4, 2),
    64: (8, 4, 2, 1),
    128: (16, 8, 4, 2, 1),
}
# Multipliers of `ch` for the critic's stride-2 convolutions. The 32 and 64 px critics have
# the repository's four convolutions (so the 32 px one ends at 2x2), the 128 px one its five.
CRITIC_WIDTHS = {
    32: (1, 2, 4, 8),
    64: (1, 2, 4, 8),
    128: (1, 2, 4, 8, 16),
}
KERNEL = 5  # every (transposed) convolution is 5x5, stride 2
LEAK = 0.2  # leaky-ReLU slope of the critic
INIT_STD = 0.02  # DCGAN weight initialisation

# What a 128 px option `generator_128` may build: the authors' ResNet generator (their
# --architecture=g_resnet5, the one Yu et al. trained for Attribution88's 128 px models) or the
# five-transposed-convolution DCGAN (their dcgan5), kept so 128 px checkpoints of that layout load.
GENERATORS_128 = ("g_resnet5", "dcgan5")
# Multipliers of `ch` for g_resnet5: entry 0 is the 4x4 map after the linear layer, each further
# entry the map after one residual up-block (4x4 -> 64x64); a transposed convolution then makes 128.
RESNET_WIDTHS = (16, 8, 4, 2, 1)
RESNET_KERNEL = 3  # convolutions inside a residual block
RESNET_LINEAR_STD = 0.01  # the repository's `linear` initialiser, N(0, 0.01)


def check_resolution(arch: str, resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"{arch} supports resolutions {RESOLUTIONS}, not {resolution}")


def parse_options(name: str, cls: type, options: Mapping[str, Any] | None,
                  choices: Mapping[str, Collection[str]]) -> Any:
    """parse_dataclass_options for a dataclass that also has string fields, each one of `choices[field]`."""
    options = dict(options or {})
    picked = {}
    for key, allowed in choices.items():
        if key in options:
            value = options.pop(key)
            if not isinstance(value, str) or value not in allowed:
                raise GeneratorError(f"{name} option {key}={value!r} must be one of {sorted(allowed)}")
            picked[key] = value
    return dataclasses.replace(parse_dataclass_options(name, cls, options), **picked)


def _dcgan_init(module: nn.Module) -> nn.Module:
    nn.init.normal_(module.weight, 0.0, INIT_STD)
    nn.init.zeros_(module.bias)
    return module


def _up(in_ch: int, out_ch: int) -> nn.ConvTranspose2d:
    # padding 2 + output_padding 1 doubles the side exactly, like TensorFlow's "SAME".
    return _dcgan_init(nn.ConvTranspose2d(in_ch, out_ch, KERNEL, stride=2, padding=2, output_padding=1))


def _down(in_ch: int, out_ch: int) -> nn.Conv2d:
    return _dcgan_init(nn.Conv2d(in_ch, out_ch, KERNEL, stride=2, padding=2))


class UpBlock(nn.Module):
    """5x5 stride-2 transposed convolution, BatchNorm, ReLU: doubles the side."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: channels of the incoming map; out_ch: channels of the doubled map
        self.conv = _up(in_ch, out_ch)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class DCGANGenerator(nn.Module):
    """z (N, dim_z) -> image (N, 3, resolution, resolution) in [-1, 1]."""

    def __init__(self, resolution: int, ch: int = 64, dim_z: int = 128, arch: str = "dcgan"):
        super().__init__()
        check_resolution(arch, resolution)
        self.resolution = resolution  # output side; sets the number of transposed convolutions
        self.ch = ch  # base width, multiplied by GENERATOR_WIDTHS[resolution]
        self.dim_z = dim_z  # latent size the linear layer expects
        widths = [ch * m for m in GENERATOR_WIDTHS[resolution]]
        self.linear = _dcgan_init(nn.Linear(dim_z, 4 * 4 * widths[0]))
        self.bn = nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(*(UpBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.to_rgb = _up(widths[-1], 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        h = F.relu(self.bn(self.linear(z).view(z.shape[0], -1, 4, 4)))
        x = torch.tanh(self.to_rgb(self.blocks(h)))
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        return x


def _uniform_init(conv: nn.Conv2d, std: float) -> nn.Conv2d:
    # The repository's ResNet layers (after Gulrajani et al.'s code) draw uniform weights of the
    # given standard deviation, i.e. on [-std sqrt 3, std sqrt 3], and start biases at zero.
    nn.init.uniform_(conv.weight, -std * math.sqrt(3), std * math.sqrt(3))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _conv(in_ch: int, out_ch: int, kernel: int, *, he: bool, bias: bool) -> nn.Conv2d:
    """Stride-1 "same" convolution initialised like the repository's resnet Conv2D."""
    fan_in, fan_out = in_ch * kernel**2, out_ch * kernel**2
    std = math.sqrt((4.0 if he else 2.0) / (fan_in + fan_out))
    return _uniform_init(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=bias), std)


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x: the repository tiles each pixel 2x2 (concat + depth_to_space), the same map."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ResUpBlock(nn.Module):
    """Pre-activation residual block that doubles the side (the repository's ResidualBlock, resample='up').

    main: BN, ReLU, nearest 2x, 3x3 conv (no bias), BN, ReLU, 3x3 conv;
    shortcut: nearest 2x, 1x1 conv (with bias); output = shortcut + main.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        # in_ch: channels of the incoming map; out_ch: channels of the doubled map
        self.bn1 = nn.BatchNorm2d(in_ch)
        # Bias-free: BN2 right after would cancel it (the repository passes biases=False).
        self.conv1 = _conv(in_ch, out_ch, RESNET_KERNEL, he=True, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = _conv(out_ch, out_ch, RESNET_KERNEL, he=True, bias=True)
        # Glorot-initialised like the repository's shortcut (he_init=False).
        self.shortcut = _conv(in_ch, out_ch, 1, he=False, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.bn1(x))))
        h = self.conv2(F.relu(self.bn2(h)))
        return self.shortcut(upsample(x)) + h


class ResNetGenerator(nn.Module):
    """The repository's ``ResNetGenerator`` (g_resnet5), 128 px: z (N, dim_z) -> image (N, 3, 128, 128) in [-1, 1].

    Linear layer to a 4x4 map of 16ch channels (no normalisation: the first block starts with
    BN-ReLU), four residual up-blocks to 64x64 at ch, BN, ReLU, one 5x5 stride-2 transposed
    convolution to RGB. The repository ends with a sigmoid for [0, 1] images; 2 sigmoid(h) - 1
    = tanh(h / 2) is the same map into our [-1, 1] range.
    """

    def __init__(self, resolution: int, ch: int = 64, dim_z: int = 128, arch: str = "dcgan"):
        super().__init__()
        if resolution != 128:
            raise GeneratorError(f"{arch}: the g_resnet5 generator is built for 128 px, not {resolution}")
        self.resolution = resolution  # output side (128: four up-blocks and one transposed convolution)
        self.ch = ch  # base width, multiplied by RESNET_WIDTHS
        self.dim_z = dim_z  # latent size the linear layer expects
        widths = [ch * m for m in RESNET_WIDTHS]
        self.linear = nn.Linear(dim_z, 4 * 4 * widths[0])
        nn.init.normal_(self.linear.weight, 0.0, RESNET_LINEAR_STD)
        nn.init.zeros_(self.linear.bias)
        self.res_blocks = nn.Sequential(*(ResUpBlock(a, b) for a, b in zip(widths, widths[1:])))
        self.bn_out = nn.BatchNorm2d(widths[-1])
        self.to_rgb = _up(widths[-1], 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        h = self.res_blocks(self.linear(z).view(z.shape[0], -1, 4, 4))
        x = torch.tanh(self.to_rgb(F.relu(self.bn_out(h))) / 2)
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        return x


def build_generator(arch: str, resolution: int, *, ch: int, dim_z: int,
                    generator_128: str) -> DCGANGenerator | ResNetGenerator:
    """The authors' generator for `resolution`: their dcgan at 32 and 64 px, `generator_128` at 128 px."""
    check_resolution(arch, resolution)
    if resolution == 128 and generator_128 == "g_resnet5":
        return ResNetGenerator(resolution, ch=ch, dim_z=dim_z, arch=arch)
    if resolution == 128 and generator_128 != "dcgan5":
        raise GeneratorError(f"{arch} option generator_128={generator_128!r} must be one of {list(GENERATORS_128)}")
    return DCGANGenerator(resolution, ch=ch, dim_z=dim_z, arch=arch)


class FeatureCritic(nn.Module):
    """image (N, 3, resolution, resolution) -> features h(x) (N, feature_dim); no cross-sample ops."""

    def __init__(self, resolution: int, ch: int = 64, feature_dim: int = 16, arch: str = "dcgan"):
        super().__init__()
        check_resolution(arch, resolution)
        self.resolution = resolution  # input side the layer plan is made for
        self.ch = ch  # base width, multiplied by CRITIC_WIDTHS[resolution]
        self.feature_dim = feature_dim  # length of h(x)
        widths = [3] + [ch * m for m in CRITIC_WIDTHS[resolution]]
        self.convs = nn.ModuleList(_down(a, b) for a, b in zip(widths, widths[1:]))
        side = resolution // 2 ** len(self.convs)
        self.linear = _dcgan_init(nn.Linear(widths[-1] * side * side, feature_dim))
        # Draws the gradient penalty's interpolation weights. Seeded from the RNG the network is
        # built on (generators.training builds it under isolated_rng(seed)), so training stays a
        # function of its seed without touching the global RNG.
        self.penalty_rng = torch.Generator("cpu").manual_seed(int(torch.randint(2**62, ()).item()))

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every layer's output for images x: each convolution's leaky-ReLU activations, then h(x) (N, feature_dim).

        MMD GAN's L2 penalty (the repository's ``return_layers``) reads them all.
        """
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        outputs = []
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LEAK)
            outputs.append(h)
        outputs.append(self.linear(h.flatten(1)))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)[-1]


def interpolation_weights(critic: FeatureCritic, n: int) -> torch.Tensor:
    """(n,) uniform [0, 1) weights for the penalty's interpolates, from the critic's own RNG."""
    return torch.rand(n, generator=critic.penalty_rng)


def gradient_penalty(per_sample: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """mean_i (||d per_sample(x_hat)_i / d x_hat_i||_2 - 1)^2 with x_hat = real + mix * (fake - real).

    `per_sample` maps (N, 3, R, R) images to (N,) values, each depending on its own image only,
    so the gradient of their sum with respect to x_hat holds every sample's own gradient.
    """
    assert real.shape == fake.shape and mix.shape == (len(real),), (real.shape, fake.shape, mix.shape)
    mix = mix.view(-1, 1, 1, 1).to(real)
    x_hat = torch.lerp(real, fake, mix).detach().requires_grad_(True)
    values = per_sample(x_hat)
    assert values.shape == (len(real),), f"per-sample values must be ({len(real)},), got {tuple(values.shape)}"
    # create_graph: the penalty is itself differentiated in the critic's update.
    (grad,) = torch.autograd.grad(values.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
