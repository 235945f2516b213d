"""MMD GAN (Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018).

The critic maps an image to a feature vector h(x) (16-d, the authors' ``dof_dim`` for MMD
GAN); the loss is the squared Maximum Mean Discrepancy between h(real) and h(fake) under a
fixed kernel, estimated without bias:

    MMD^2 = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (n (n-1))
            - 2 sum_{i,j} k(x_i, y_j) / (m n).

The generator minimises MMD^2. The critic maximises it minus a gradient penalty (weight 1, as
in the paper) on the MMD witness function
``w(x) = mean_j k(h(x), h(real_j)) - mean_j k(h(x), h(fake_j))`` at random interpolates
between real and fake images, and minus an L2 penalty on its activations (weight
``l2_penalty``, 1 by default):

    critic loss = -MMD^2 + 1 * mean (||grad_x w(x_hat)|| - 1)^2
                  + l2_penalty * (mean_real + mean_fake) sum_layers mean(layer output^2).

The L2 penalty is the repository's ``--L2_discriminator_penalty`` (``add_l2_penalty`` in
``core/model.py``): per image, the mean square of each critic layer's output (every
convolution's leaky-ReLU activations and the features h), summed over layers, real and fake.
main.py defaults it to 0, but every MMD GAN run script of the authors (cifar10.sh, lsun.sh,
celeba.sh, mnist.sh) and Yu et al.'s 128 px command pass 1, so 1 is the default here.

Kernel (option ``kernel``, default ``mix_rq_1dot``): the repository's rational-quadratic mixture
plus a multiple of the linear kernel, ``k(a, b) = sum_alpha (1 + ||a-b||^2 / (2 alpha))^-alpha +
c <a, b>`` with alpha in {0.1, 1, 10} (``core/mmd.py``, ``_mix_rq_kernel``) and c = 1 for
``mix_rq_1dot``, the kernel every run script and Yu et al.'s command select. (The paper's text
describes the rq* mixture with alpha in {0.2, 0.5, 1, 2, 5}; the code of the published runs
uses the values above.) Heavy tails and no bandwidth to tune to the moving scale of the
critic's features are why the authors chose it over a Gaussian mixture.

Optimiser (the authors' defaults, ``core/model.py`` and ``main.py``): Adam lr 1e-4 for both
networks, beta1 0.5, beta2 0.9, 5 critic updates per generator update.

Networks: generators.dcgan_nets (the authors' DCGAN generator at 32 and 64 px, their ResNet
generator ``g_resnet5`` at 128 px as Yu et al. trained Attribution88's MMD GAN, a BatchNorm-free
DCGAN critic with a ``feature_dim`` output). Left out, as in the shared loop for every family:
the authors' KID-based learning-rate schedule (``--MMD_lr_scheduler``), per-variable
gradient-norm clipping at 1, and uniform [-1, 1] latents of size 100 (latents here are standard
normal, see generators.base; ``dim_z`` defaults to 128).

This module is an entry of generators.ARCHITECTURES and so provides the NetworkFamily surface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from generators import dcgan_nets
from generators.base import GeneratorError
from generators.dcgan_nets import DCGANGenerator, FeatureCritic, ResNetGenerator

NAME = "mmdgan"
RESOLUTIONS = dcgan_nets.RESOLUTIONS
TRAIN_DEFAULTS = {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}

# The repository's rational-quadratic kernels (core/mmd.py, _mix_rq_*_kernel): the mixture over
# RQ_ALPHAS, unit weights, plus this multiple of the linear kernel <a, b>.
RQ_ALPHAS = (0.1, 1.0, 10.0)
KERNELS = {"mix_rq": 0.0, "mix_rq_001dot": 0.01, "mix_rq_01dot": 0.1, "mix_rq_1dot": 1.0, "mix_rq_10dot": 10.0}
GP_WEIGHT = 1.0  # gradient-penalty weight on the witness function, as in the paper and run scripts


@dataclasses.dataclass(frozen=True)
class MMDGANOptions:
    """Architecture and loss hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 64  # base channel width (gf_dim = df_dim = 64 in the paper's DCGAN)
    dim_z: int = 128  # latent size
    feature_dim: int = 16  # length of the critic's feature vector h(x) the kernel compares
    # Generator at 128 px (dcgan_nets.GENERATORS_128): the authors' g_resnet5, as Yu et al. trained
    # it; 32 and 64 px always build the authors' dcgan, as their run scripts do.
    generator_128: str = "g_resnet5"
    kernel: str = "mix_rq_1dot"  # a name of KERNELS; every run script of the authors passes mix_rq_1dot
    # Weight of the L2 penalty on the critic's activations (the authors' --L2_discriminator_penalty,
    # 1 in every MMD run script, default 0 in main.py); 0 disables it.
    l2_penalty: float = 1.0


def parse_options(options: Mapping[str, Any] | None) -> MMDGANOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    return dcgan_nets.parse_options(NAME, MMDGANOptions, options,
                                    {"generator_128": dcgan_nets.GENERATORS_128, "kernel": tuple(KERNELS)})


def options_dict(options: MMDGANOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


class MMDCritic(FeatureCritic):
    """The shared feature critic, carrying the loss settings its discriminator_loss applies.

    They travel with the network because the family's losses see only the networks and batches.
    """

    def __init__(self, resolution: int, ch: int, feature_dim: int, kernel: str, l2_penalty: float):
        super().__init__(resolution, ch=ch, feature_dim=feature_dim, arch=NAME)
        if kernel not in KERNELS:
            raise GeneratorError(f"{NAME} option kernel={kernel!r} must be one of {sorted(KERNELS)}")
        self.kernel = kernel  # name in KERNELS the MMD^2 and the witness use
        self.l2_penalty = l2_penalty  # weight of l2_activation_penalty in the critic loss


def build_generator(resolution: int, options: MMDGANOptions) -> DCGANGenerator | ResNetGenerator:
    return dcgan_nets.build_generator(NAME, resolution, ch=options.ch, dim_z=options.dim_z,
                                      generator_128=options.generator_128)


def build_discriminator(resolution: int, options: MMDGANOptions) -> MMDCritic:
    return MMDCritic(resolution, ch=options.ch, feature_dim=options.feature_dim, kernel=options.kernel,
                     l2_penalty=options.l2_penalty)


def kernel(a: torch.Tensor, b: torch.Tensor, name: str = "mix_rq_1dot") -> torch.Tensor:
    """(m, d), (n, d) features -> (m, n) matrix of kernel `name`:
    sum_alpha (1 + ||a-b||^2 / (2 alpha))^-alpha + KERNELS[name] <a, b>, alpha in RQ_ALPHAS."""
    assert a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1], (tuple(a.shape), tuple(b.shape))
    # Explicit differences, not the |a|^2 + |b|^2 - 2ab expansion: exact (never negative) at the
    # cost of an (m, n, d) tensor, which is small at critic sizes (64 x 64 x 16).
    sq_dist = (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)
    k = sum((1 + sq_dist / (2 * alpha)).pow(-alpha) for alpha in RQ_ALPHAS)
    return k + KERNELS[name] * (a @ b.T)


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, name: str = "mix_rq_1dot") -> torch.Tensor:
    """Unbiased estimate of MMD^2 between feature sets x (m, d) and y (n, d) under kernel `name`; m, n >= 2.

    Unbiased means it averages to the true MMD^2, so for two samples of one distribution it
    is near zero and may be slightly negative.
    """
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise GeneratorError(f"the unbiased MMD^2 needs at least 2 samples on each side, got {m} and {n}")
    k_xx, k_yy, k_xy = kernel(x, x, name), kernel(y, y, name), kernel(x, y, name)
    # The linear term makes the diagonal non-constant, so subtract the actual trace.
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def witness(h: torch.Tensor, h_real: torch.Tensor, h_fake: torch.Tensor, name: str = "mix_rq_1dot") -> torch.Tensor:
    """MMD witness at features h (N, d): mean kernel to the real features minus to the fake ones, (N,)."""
    return kernel(h, h_real, name).mean(1) - kernel(h, h_fake, name).mean(1)


def witness_penalty(critic: MMDCritic, real: torch.Tensor, fake: torch.Tensor, h_real: torch.Tensor,
                    h_fake: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    """Gradient penalty on the witness at x_hat = real + mix * (fake - real), pairing the first min(B) images.

    h_real / h_fake are the critic's features of the whole batches (not detached: in the
    authors' code the penalty also moves the critic through them).
    """
    n = min(len(real), len(fake))
    return dcgan_nets.gradient_penalty(lambda x: witness(critic(x), h_real, h_fake, critic.kernel),
                                       real[:n], fake[:n], mix)


def l2_activation_penalty(real_layers: list[torch.Tensor], fake_layers: list[torch.Tensor]) -> torch.Tensor:
    """The authors' L2 critic penalty (``add_l2_penalty`` in core/model.py), before its weight.

    Per image, the mean square of every critic layer's output (each convolution's activations
    and the features h), summed over the layers; averaged over the real batch plus averaged
    over the fake batch (the repository adds the two per-image terms of equal-sized batches).
    """
    def per_image(layers: list[torch.Tensor]) -> torch.Tensor:
        return sum(a.flatten(1).pow(2).mean(1) for a in layers)

    return per_image(real_layers).mean() + per_image(fake_layers).mean()


def discriminator_loss(disc: MMDCritic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-MMD^2(h(real), h(fake)) + GP_WEIGHT * witness gradient penalty + disc.l2_penalty * L2 penalty."""
    # One pass: the critic has no cross-sample operations, so batching both changes nothing.
    layers = disc.layers(torch.cat([real, fake]))
    real_layers, fake_layers = [a[:len(real)] for a in layers], [a[len(real):] for a in layers]
    h_real, h_fake = real_layers[-1], fake_layers[-1]
    mix = dcgan_nets.interpolation_weights(disc, min(len(real), len(fake)))
    penalty = witness_penalty(disc, real, fake, h_real, h_fake, mix)
    loss = -mmd2_unbiased(h_real, h_fake, disc.kernel) + GP_WEIGHT * penalty
    if disc.l2_penalty > 0:
        loss = loss + disc.l2_penalty * l2_activation_penalty(real_layers, fake_layers)
    return loss


def generator_loss(disc: MMDCritic, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """MMD^2(h(real), h(fake)), minimised by the generator (the L2 penalty is the critic's alone)."""
    h = disc(torch.cat([real, fake]))
    return mmd2_unbiased(h[:len(real)], h[len(real):], disc.kernel)
