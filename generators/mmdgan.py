"""MMD GAN (Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018).

The critic maps an image to a feature vector h(x) (16-d, the authors' ``dof_dim`` for MMD
GAN); the loss is the squared Maximum Mean Discrepancy between h(real) and h(fake) under a
fixed kernel, estimated without bias:

    MMD^2 = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
            - 2 sum_{i,j} k(x_i, y_j) / (m n).

The generator minimises MMD^2; the critic maximises it minus a gradient penalty (weight 1, as
in the paper) on the MMD witness function
``w(x) = mean_j k(h(x), h(real_j)) - mean_j k(h(x), h(fake_j))`` at random interpolates
between real and fake images: critic loss = -MMD^2 + 1 * mean (||grad_x w(x_hat)|| - 1)^2.

Kernel: the paper's rational-quadratic mixture plus a linear kernel ("rq*"; the authors' run
scripts select it as ``mix_rq_1dot``), ``k(a, b) = sum_alpha (1 + ||a-b||^2 / (2 alpha))^-alpha
+ <a, b>`` with alpha in {0.2, 0.5, 1, 2, 5}. We use it rather than a Gaussian mixture because
it is the kernel of the published results: a rational-quadratic mixture has heavy tails and
no bandwidths to tune to the (moving) scale of the critic's features.

Optimiser (the authors' defaults, ``core/model.py`` and ``main.py``): Adam lr 1e-4 for both
networks, beta1 0.5, beta2 0.9, 5 critic updates per generator update.

Networks: generators.dcgan_nets (the authors' DCGAN generator at 32 and 64 px, their ResNet
generator ``g_resnet5`` at 128 px as Yu et al. trained Attribution88's MMD GAN, a BatchNorm-free
DCGAN critic with a ``feature_dim`` output). Left out, as in the shared loop for every family: the authors' KID-based
learning-rate schedule and penalty decay, the L2 penalty on critic activations one of their
run scripts adds, per-variable gradient-norm clipping at 1, the 10
critic steps at the start and every 500th step, and uniform [-1, 1] latents (latents here are
standard normal, see generators.base).

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

NAME = "mmdgan"
RESOLUTIONS = dcgan_nets.RESOLUTIONS
TRAIN_DEFAULTS = {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}

RQ_ALPHAS = (0.2, 0.5, 1.0, 2.0, 5.0)  # rational-quadratic scale mixture of the paper
LINEAR_WEIGHT = 1.0  # weight of the linear kernel added to the mixture (mix_rq_1dot)
GP_WEIGHT = 1.0  # gradient-penalty weight on the witness function, as in the paper


@dataclasses.dataclass(frozen=True)
class MMDGANOptions:
    """Architecture hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 64  # base channel width (gf_dim = df_dim = 64 in the paper's DCGAN)
    dim_z: int = 128  # latent size
    feature_dim: int = 16  # length of the critic's feature vector h(x) the kernel compares
    # Generator at 128 px (dcgan_nets.GENERATORS_128): the authors' g_resnet5, as Yu et al. trained
    # it; 32 and 64 px always build the authors' dcgan, as their run scripts do.
    generator_128: str = "g_resnet5"


def parse_options(options: Mapping[str, Any] | None) -> MMDGANOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    return dcgan_nets.parse_options(NAME, MMDGANOptions, options,
                                    {"generator_128": dcgan_nets.GENERATORS_128})


def options_dict(options: MMDGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def build_generator(resolution: int, options: MMDGANOptions) -> DCGANGenerator | ResNetGenerator:
    return dcgan_nets.build_generator(NAME, resolution, ch=options.ch, dim_z=options.dim_z,
                                      generator_128=options.generator_128)


def build_discriminator(resolution: int, options: MMDGANOptions) -> FeatureCritic:
    return FeatureCritic(resolution, ch=options.ch, feature_dim=options.feature_dim, arch=NAME)


def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(m, d), (n, d) features -> (m, n) kernel matrix of the rational-quadratic mixture + linear kernel."""
    assert a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1], (tuple(a.shape), tuple(b.shape))
    # Explicit differences, not the |a|^2 + |b|^2 - 2ab expansion: exact (never negative) at the
    # cost of an (m, n, d) tensor, which is small at critic sizes (64 x 64 x 16).
    sq_dist = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    k = sum((1 + sq_dist / (2 * alpha)).pow(-alpha) for alpha in RQ_ALPHAS)
    return k + LINEAR_WEIGHT * (a @ b.T)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between feature sets x (m, d) and y (n, d); m, n >= 2.

    Unbiased means it averages to the true MMD^2, so for two samples of one distribution it
    is near zero and may be slightly negative.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise GeneratorError(f"the unbiased MMD^2 needs at least 2 samples on each side, got {m} and {n}")
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    # The linear term makes the diagonal non-constant, so subtract the actual trace.
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def witness(h: torch.Tensor, h_real: torch.Tensor, h_fake: torch.Tensor) -> torch.Tensor:
    """MMD witness at features h (N, d): mean kernel to the real features minus to the fake ones, (N,)."""
    return kernel(h, h_real).mean(1) - kernel(h, h_fake).mean(1)


def witness_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, h_real: torch.Tensor,
                    h_fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Gradient penalty on the witness at x_hat = real + mix * (fake - real), pairing the first min(B) images.

    h_real / h_fake are the critic's features of the whole batches (not detached: in the
    authors' code the penalty also moves the critic through them).
    """
    n = min(len(real), len(fake))
    return dcgan_nets.gradient_penalty(lambda x: witness(critic(x), h_real, h_fake),
                                       real[:n], fake[:n], mix)


def _features(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # One pass: the critic has no cross-sample operations, so batching both changes nothing.
    h = critic(torch.cat([real, fake]))
    return h[:len(real)], h[len(real):]


def discriminator_loss(disc: FeatureCritic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-MMD^2(h(real), h(fake)) + GP_WEIGHT * witness gradient penalty."""
    h_real, h_fake = _features(disc, real, fake)
    mix = dcgan_nets.interpolation_weights(disc, min(len(real), len(fake)))
    penalty = witness_penalty(disc, real, fake, h_real, h_fake, mix)
    return -mmd2_unbiased(h_real, h_fake) + GP_WEIGHT * penalty


def generator_loss(disc: FeatureCritic, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """MMD^2(h(real), h(fake)), minimised by the generator."""
    h_real, h_fake = _features(disc, real, fake)
    return mmd2_unbiased(h_real, h_fake)
