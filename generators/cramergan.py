"""Cramér GAN (Bellemare et al., "The Cramer Distance as a Solution to Biased Wasserstein
Gradients", 2017), as implemented in the repository of Bińkowski et al. ("Demystifying MMD
GANs", ICLR 2018), whose networks it shares (generators.dcgan_nets).

The critic maps an image to a feature vector h(x) (256-d, the authors' ``dof_dim`` for Cramér
GAN). With x_r real and x_g, x'_g two independent generated batches, Algorithm 1 of the paper:

    generator:  L_g = mean ||h(x_r) - h(x_g)|| + ||h(x_r) - h(x'_g)|| - ||h(x_g) - h(x'_g)||
    surrogate:  f(x) = ||h(x) - h(x'_g)|| - ||h(x)||
    critic:     L_c = -mean (f(x_r) - f(x_g)) + 10 * mean (||grad_x f(x_hat)|| - 1)^2,
                x_hat = x_r + u (x_g - x_r), u ~ U[0, 1) per sample

(the energy distance between the feature distributions, with the norm of h(x'_g) paired per
sample). The shared training loop hands the losses one fake batch; it is split in two halves
for x_g and x'_g, paired with the first half of the real batch, so a batch of B images gives
B // 2 triples (the authors draw two full batches instead).

The repository's version of the critic loss uses x_g as the reference and interpolates
towards it; here the interpolates are between x_r and x_g and the reference is x'_g, as the
paper's algorithm has it.

Optimiser: Adam lr 1e-4 for both networks, beta1 0.5, beta2 0.9, 5 critic updates per
generator update: the repository's Cramér GAN inherits its optimiser from its MMD GAN class
(``core/model.py``), and its run script sets gradient penalty 10 and 256 features.

Networks: generators.dcgan_nets, chosen per resolution as the authors' run scripts do: DCGAN at
32 and 64 px, the ResNet generator ``g_resnet5`` with the DCGAN5 critic at 128 px (the setting
of Yu et al.'s GANFingerprints, which trained Attribution88's 128 px Cramér GAN:
``--architecture g_resnet5 --output_size 128 --dof_dim 256 --gradient_penalty 10``).

MMD GAN's kernel and its L2 penalty on critic activations do not apply: the repository's
Cramér GAN replaces MMD GAN's ``set_loss`` (so ``add_l2_penalty`` never runs), and neither its
run scripts nor Yu et al.'s command pass ``--kernel`` or ``--L2_discriminator_penalty``.
Left out, as for MMD GAN: the KID-based learning-rate schedule, per-variable gradient clipping
and uniform latents.

This module is an entry of generators.ARCHITECTURES and so provides the NetworkFamily surface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from generators import dcgan_nets
from generators.base import GeneratorError
from generators.dcgan_nets import DCGANGenerator, FeatureCritic, ResNetGenerator

NAME = "cramergan"
RESOLUTIONS = dcgan_nets.RESOLUTIONS
TRAIN_DEFAULTS = {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}

GP_WEIGHT = 10.0  # gradient-penalty weight, as in the paper's Algorithm 1


@dataclasses.dataclass(frozen=True)
class CramerGANOptions:
    """Architecture hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 64  # base channel width (gf_dim = df_dim = 64 in the repository's DCGAN)
    dim_z: int = 128  # latent size
    feature_dim: int = 256  # length of the critic's feature vector h(x)
    # Generator at 128 px (dcgan_nets.GENERATORS_128): the authors' g_resnet5, as Yu et al. trained
    # it; 32 and 64 px always build the authors' dcgan, as their run scripts do.
    generator_128: str = "g_resnet5"


def parse_options(options: Mapping[str, Any] | None) -> CramerGANOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    return dcgan_nets.parse_options(NAME, CramerGANOptions, options,
                                    {"generator_128": dcgan_nets.GENERATORS_128})


def options_dict(options: CramerGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def build_generator(resolution: int, options: CramerGANOptions) -> DCGANGenerator | ResNetGenerator:
    return dcgan_nets.build_generator(NAME, resolution, ch=options.ch, dim_z=options.dim_z,
                                      generator_128=options.generator_128)


def build_discriminator(resolution: int, options: CramerGANOptions) -> FeatureCritic:
    return FeatureCritic(resolution, ch=options.ch, feature_dim=options.feature_dim, arch=NAME)


def surrogate(h: torch.Tensor, h_ref: torch.Tensor) -> torch.Tensor:
    """f = ||h - h_ref|| - ||h|| per row: features h (N, d), reference features h(x'_g) (N, d) -> (N,)."""
    assert h.shape == h_ref.shape and h.ndim == 2, (tuple(h.shape), tuple(h_ref.shape))
    return (h - h_ref).norm(dim=1) - h.norm(dim=1)


def split_batches(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_r, x_g, x'_g): the two halves of `fake` and as many real images; an odd last fake is dropped."""
    half = len(fake) // 2
    if half < 1 or len(real) < half:
        raise GeneratorError(f"cramergan needs a fake batch of at least 2 images and at least half as "
                             f"many real ones, got {len(fake)} fake and {len(real)} real")
    return real[:half], fake[:half], fake[half:2 * half]


def surrogate_penalty(critic: nn.Module, x_r: torch.Tensor, x_g: torch.Tensor, h_ref: torch.Tensor,
                      mix: torch.Tensor) -> torch.Tensor:
    """Gradient penalty on f(x) = ||h(x) - h_ref|| - ||h(x)|| at x_hat = x_r + mix * (x_g - x_r)."""
    return dcgan_nets.gradient_penalty(lambda x: surrogate(critic(x), h_ref), x_r, x_g, mix)


def _features(critic: nn.Module, *batches: torch.Tensor) -> list[torch.Tensor]:
    # One pass: the critic has no cross-sample operations, so batching them changes nothing.
    return list(critic(torch.cat(batches)).split([len(b) for b in batches]))


def discriminator_loss(disc: FeatureCritic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-mean(f(x_r) - f(x_g)) + GP_WEIGHT * gradient penalty of f on real/fake interpolates."""
    x_r, x_g, x_g2 = split_batches(real, fake)
    h_r, h_g, h_g2 = _features(disc, x_r, x_g, x_g2)
    critic_gap = (surrogate(h_r, h_g2) - surrogate(h_g, h_g2)).mean()
    mix = dcgan_nets.interpolation_weights(disc, len(x_r))
    return -critic_gap + GP_WEIGHT * surrogate_penalty(disc, x_r, x_g, h_g2, mix)


def generator_loss(disc: FeatureCritic, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """mean ||h(x_r) - h(x_g)|| + ||h(x_r) - h(x'_g)|| - ||h(x_g) - h(x'_g)|| (energy distance)."""
    x_r, x_g, x_g2 = split_batches(real, fake)
    h_r, h_g, h_g2 = _features(disc, x_r, x_g, x_g2)
    return ((h_r - h_g).norm(dim=1) + (h_r - h_g2).norm(dim=1) - (h_g - h_g2).norm(dim=1)).mean()
