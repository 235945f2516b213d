"""DCGAN-style generator and feature-vector critic shared by MMD GAN and Cramér GAN.

Both families come from the same code base (Bińkowski, Sutherland, Arbel & Gretton,
"Demystifying MMD GANs", ICLR 2018, whose TensorFlow repository also implements Cramér GAN),
and both use the same two networks; only the losses differ (generators.mmdgan,
generators.cramergan). This module holds the networks, the option parsing they share and the
gradient penalty on interpolates that both critics get.

Generator (the repository's ``DCGANGenerator`` / ``DCGAN5Generator``): a linear projection of
z to a 4x4 map, BatchNorm, ReLU, then 5x5 stride-2 transposed convolutions each followed by
BatchNorm and ReLU, and a last 5x5 stride-2 transposed convolution to RGB. Widths halve as
the resolution doubles and the last hidden map has ``ch`` channels at 64 and 128 px (the
repository's ``gf_dim``): 8ch..ch at 64 px, 16ch..ch at 128 px. At 32 px the repository starts
from a 2x2 map; here it starts at 4x4 like every other resolution (8ch, 4ch, 2ch: the usual
CIFAR-10 DCGAN). The output is tanh because our images live in [-1, 1] (the repository used a
sigmoid for [0, 1] images). In eval mode BatchNorm uses its running statistics, so image s
depends on latent s only.

Critic (the repository's ``DCGANDiscriminator`` / ``DCGAN5Discriminator``): 5x5 stride-2
convolutions with leaky ReLU (slope 0.2), widths ch, 2ch, 4ch, 8ch (and 16ch at 128 px), then
a linear layer from the flattened map to a ``feature_dim`` vector h(x). There is no
normalisation: the repository drops the critic's BatchNorm whenever a gradient penalty is
used, and a per-sample penalty needs a critic without cross-sample operations.

Initialisation follows the DCGAN code the repository builds on: weights N(0, 0.02), biases
zero, BatchNorm scale 1 and shift 0. PyTorch pads 5x5/stride-2 convolutions symmetrically
(2 on each side) where TensorFlow's "SAME" pads 1 before and 2 after; the layer sizes are
the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from generators.base import GeneratorError

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


def check_resolution(arch: str, resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"{arch} supports resolutions {RESOLUTIONS}, not {resolution}")


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LEAK)
        return self.linear(h.flatten(1))


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
