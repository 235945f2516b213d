"""MMD GAN: networks, unbiased MMD^2 with the authors' kernels, witness gradient penalty, L2 critic penalty,
training and checkpoints."""

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators
from generators.training import GeneratorTraining
from generators import mmdgan
from generators.base import GeneratorError, NetworkGenerator
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos, tiny_networks

OPTIONS = TINY_OPTIONS["mmdgan"]
# What parse_options fills in: the authors' 128 px generator, the run scripts' kernel and L2 weight.
DEFAULTS = {"generator_128": "g_resnet5", "kernel": "mix_rq_1dot", "l2_penalty": 1.0}
TRAIN = dict(steps=2, batch_size=8, seed=3, n_dis=2)


@pytest.fixture(scope="module")
def photos():
    return random_photos()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, photos):
    """A checkpoint written by generators.train (2 steps, 32 px, ch=8)."""
    out = tmp_path_factory.mktemp("ckpt") / "mmdgan_tiny"
    return generators.train("mmdgan", photos, out, GeneratorTraining(**TRAIN), options=OPTIONS)


def tiny(resolution=32, **options):
    return tiny_networks(mmdgan, OPTIONS, resolution, **options)


# ---------------------------------------------------------------------------------------------
# Networks and options


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_network_shapes(resolution):
    gen, critic = tiny(resolution, ch=4)
    x = gen(torch.randn(3, 32))
    assert x.shape == (3, 3, resolution, resolution) and x.abs().max() <= 1
    assert critic(x).shape == (3, 8)
    # 4x4 start, one up-sampling block per doubling (at 128 px residual ones), a last transposed
    # convolution to RGB.
    blocks = gen.res_blocks if resolution == 128 else gen.blocks
    assert len(blocks) + 1 == int(math.log2(resolution // 4))
    # Critics that get a gradient penalty carry no batch norm.
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    with pytest.raises(AssertionError):
        gen(torch.randn(2, 7))


def test_options_defaults_and_errors():
    assert mmdgan.parse_options(None) == mmdgan.MMDGANOptions(ch=64, dim_z=128, feature_dim=16, **DEFAULTS)
    assert mmdgan.options_dict(mmdgan.parse_options(OPTIONS)) == {**OPTIONS, **DEFAULTS}
    with pytest.raises(GeneratorError, match="unknown mmdgan options"):
        mmdgan.parse_options({"width": 3})
    with pytest.raises(GeneratorError, match=r"mmdgan option kernel='rbf' must be one of \['mix_rq', "):
        mmdgan.parse_options({"kernel": "rbf"})
    assert mmdgan.parse_options({"kernel": "mix_rq", "l2_penalty": 0}).l2_penalty == 0.0
    with pytest.raises(GeneratorError, match="mmdgan option kernel='rbf'"):
        mmdgan.build_discriminator(32, dataclasses.replace(mmdgan.parse_options(OPTIONS), kernel="rbf"))
    for bad in ({"ch": 0}, {"feature_dim": 2.5}, {"dim_z": True}, {"l2_penalty": -1}):
        with pytest.raises(GeneratorError, match=f"mmdgan option {next(iter(bad))}="):
            mmdgan.parse_options(bad)
    with pytest.raises(GeneratorError, match="resolutions"):
        mmdgan.build_generator(48, mmdgan.parse_options(OPTIONS))
    assert mmdgan.TRAIN_DEFAULTS == {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}


# ---------------------------------------------------------------------------------------------
# Kernel, MMD^2 and the penalty


# The repository's _mix_rq_*_kernel functions (core/mmd.py): alphas .1, 1, 10 plus this times <a, b>.
DOT_WEIGHTS = {"mix_rq": 0.0, "mix_rq_001dot": 0.01, "mix_rq_01dot": 0.1, "mix_rq_1dot": 1.0, "mix_rq_10dot": 10.0}


def direct_kernel(a, b, dot_weight=1.0):
    out = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i in range(len(a)):
        for j in range(len(b)):
            d2 = sum((float(a[i, k]) - float(b[j, k])) ** 2 for k in range(a.shape[1]))
            dot = sum(float(a[i, k]) * float(b[j, k]) for k in range(a.shape[1]))
            out[i, j] = sum((1 + d2 / (2 * alpha)) ** -alpha for alpha in (0.1, 1, 10)) + dot_weight * dot
    return out


@pytest.mark.parametrize("name", sorted(DOT_WEIGHTS))
def test_kernels_are_the_repositorys_rational_quadratic_mixtures(name):
    assert sorted(mmdgan.KERNELS) == sorted(DOT_WEIGHTS)
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(2, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(mmdgan.kernel(a, b, name), direct_kernel(a, b, DOT_WEIGHTS[name]))


def test_mmd2_matches_a_double_loop():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    kxx, kyy, kxy = direct_kernel(x, x), direct_kernel(y, y), direct_kernel(x, y)
    assert torch.allclose(mmdgan.kernel(x, y), kxy)
    within_x = sum(kxx[i, j] for i in range(4) for j in range(4) if i != j) / (4 * 3)
    within_y = sum(kyy[i, j] for i in range(5) for j in range(5) if i != j) / (5 * 4)
    between = sum(kxy[i, j] for i in range(4) for j in range(5)) / (4 * 5)
    assert torch.allclose(mmdgan.mmd2_unbiased(x, y), within_x + within_y - 2 * between)
    with pytest.raises(GeneratorError, match="at least 2 samples"):
        mmdgan.mmd2_unbiased(x[:1], y)


def test_mmd2_is_near_zero_for_one_distribution_and_positive_for_shifted_ones():
    g = torch.Generator().manual_seed(0)

    def draw(shift=0.0):
        return 0.2 * torch.randn(64, 4, generator=g) + shift

    same = torch.tensor([mmdgan.mmd2_unbiased(draw(), draw()).item() for _ in range(20)])
    shifted = torch.tensor([mmdgan.mmd2_unbiased(draw(), draw(0.3)).item() for _ in range(20)])
    assert abs(same.mean()) < 0.01 and same.min() < 0  # unbiased: slightly negative at times
    assert shifted.min() > 0.5


@pytest.mark.parametrize("name", ["mix_rq_1dot", "mix_rq"])
def test_witness_penalty_and_losses_use_the_critics_kernel(name):
    _, critic = tiny(kernel=name, l2_penalty=0)
    critic = critic.double()
    with torch.no_grad():  # features of order 1, where the kernels differ (at init they are ~1e-4)
        critic.linear.weight.mul_(1000)
    g = torch.Generator().manual_seed(2)
    real = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    fake = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    mix = torch.rand(4, generator=g, dtype=torch.float64)
    h_real, h_fake = critic(real), critic(fake)
    expected = []
    for i in range(4):
        x = (real[i] + mix[i] * (fake[i] - real[i])).detach().requires_grad_(True)
        h = critic(x[None])
        w = mmdgan.kernel(h, h_real, name).mean() - mmdgan.kernel(h, h_fake, name).mean()
        (grad,) = torch.autograd.grad(w, x)
        expected.append((grad.norm() - 1) ** 2)
    penalty = mmdgan.witness_penalty(critic, real, fake, h_real, h_fake, mix)
    assert torch.allclose(penalty, torch.stack(expected).mean())
    # The penalty is differentiable in the critic's weights (the critic update needs that).
    penalty.backward()
    assert critic.convs[0].weight.grad.abs().sum() > 0

    # Without the L2 term the critic loss is exactly -MMD^2 + 1 * penalty, with the weights from
    # the critic's RNG; the generator's loss is MMD^2, under the critic's kernel.
    state = critic.penalty_rng.get_state()
    loss = mmdgan.discriminator_loss(critic, real, fake)
    critic.penalty_rng.set_state(state)
    mix = torch.rand(4, generator=critic.penalty_rng)
    assert mmdgan.GP_WEIGHT == 1.0
    mmd2 = mmdgan.mmd2_unbiased(h_real, h_fake, name)
    assert torch.allclose(loss, -mmd2 + mmdgan.witness_penalty(critic, real, fake, h_real, h_fake, mix.double()))
    assert torch.allclose(mmdgan.generator_loss(critic, fake, real), mmd2)
    other = {"mix_rq_1dot": "mix_rq", "mix_rq": "mix_rq_1dot"}[name]
    assert not torch.allclose(mmd2, mmdgan.mmd2_unbiased(h_real, h_fake, other))


def direct_l2_term(critic, images):
    """Mean over images of sum over the critic's layers of mean(output^2), one image and one layer at a time."""
    per_image = []
    for x in images:
        h, total = x[None], 0.0
        for conv in critic.convs:
            h = F.leaky_relu(conv(h), 0.2)
            total = total + h.pow(2).mean()
        per_image.append(total + critic.linear(h.flatten(1)).pow(2).mean())
    return torch.stack(per_image).mean()


def test_l2_penalty_adds_the_authors_activation_term_to_the_critic_loss():
    _, critic = tiny()
    critic = critic.double()
    assert critic.l2_penalty == 1.0  # the run scripts' --L2_discriminator_penalty=1.
    g = torch.Generator().manual_seed(6)
    real = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    fake = torch.rand(4, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    state = critic.penalty_rng.get_state()

    def loss(weight):
        critic.l2_penalty = weight
        critic.penalty_rng.set_state(state)
        return mmdgan.discriminator_loss(critic, real, fake)

    expected = direct_l2_term(critic, real) + direct_l2_term(critic, fake)
    assert torch.allclose(loss(1.0) - loss(0.0), expected)
    assert torch.allclose(loss(2.5) - loss(0.0), 2.5 * expected)
    # The generator's loss is the MMD alone.
    assert torch.allclose(mmdgan.generator_loss(critic, fake, real),
                          mmdgan.mmd2_unbiased(critic(real), critic(fake)))


def test_generator_loss_is_mmd2_and_reaches_the_generator():
    gen, critic = tiny()
    critic.requires_grad_(False)
    real = torch.rand(6, 3, 32, 32) * 2 - 1
    fake = gen(torch.randn(6, 32))
    loss = mmdgan.generator_loss(critic, fake, real)
    assert torch.allclose(loss, mmdgan.mmd2_unbiased(critic(real), critic(fake)), atol=1e-6)
    loss.backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None, name
    assert gen.linear.weight.grad.abs().sum() > 0 and gen.to_rgb.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Training, sampling, checkpoints


def test_checkpoint_round_trip_and_per_seed_sampling(checkpoint, photos):
    gen = generators.load("mmdgan", checkpoint=checkpoint, resolution=32)
    images = gen.sample([4, 5, 6])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(gen.sample([5]), images[[1]])
    assert not np.array_equal(images[0], images[1])
    # Training is a function of its seed: the same run in memory samples the same bytes.
    result = fit(mmdgan, photos, resolve_config(mmdgan, **TRAIN), mmdgan.parse_options(OPTIONS))
    assert np.array_equal(NetworkGenerator("mmdgan", result.generator, 32, "").sample([4, 5, 6]), images)
    # Eval mode: BatchNorm uses the running statistics training left in the checkpoint.
    assert gen.net.bn.running_mean.abs().sum() > 0
    assert json.loads(checkpoint.with_suffix(".json").read_text())["options"] == {**OPTIONS, **DEFAULTS}


def test_mismatched_checkpoints_are_reported(checkpoint, tmp_path):
    with pytest.raises(GeneratorError, match="is for arch 'mmdgan', not 'cramergan'"):
        generators.load("cramergan", checkpoint=checkpoint, resolution=32)
    for path in (checkpoint, checkpoint.with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)
    sidecar = tmp_path / checkpoint.with_suffix(".json").name
    meta = json.loads(sidecar.read_text())
    meta["options"]["ch"] = 16
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="does not fit the model"):
        generators.load("mmdgan", checkpoint=sidecar, resolution=32)
    meta["options"] = {"ch": 8, "sigma": 2}
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match=r"mmdgan_tiny.json: unknown mmdgan options \['sigma'\]"):
        generators.load("mmdgan", checkpoint=sidecar, resolution=32)
    meta["options"] = {"ch": 8, "kernel": "rbf"}
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match=r"mmdgan_tiny.json: mmdgan option kernel='rbf' must be one of"):
        generators.load("mmdgan", checkpoint=sidecar, resolution=32)
