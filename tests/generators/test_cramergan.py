"""Cramér GAN: shared DCGAN networks, the Algorithm 1 losses and penalty, training and checkpoints."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

import generators
from generators.training import GeneratorTraining
from generators import cramergan
from generators.base import GeneratorError, NetworkGenerator
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos, tiny_networks

OPTIONS = TINY_OPTIONS["cramergan"]
TRAIN = dict(steps=2, batch_size=8, seed=3, n_dis=2)


@pytest.fixture(scope="module")
def photos():
    return random_photos()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, photos):
    """A checkpoint written by generators.train (2 steps, 32 px, ch=8)."""
    out = tmp_path_factory.mktemp("ckpt") / "cramergan_tiny"
    return generators.train("cramergan", photos, out, GeneratorTraining(**TRAIN), options=OPTIONS)


def tiny(resolution=32, **options):
    return tiny_networks(cramergan, OPTIONS, resolution, **options)


def images(n, seed):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def norm(v):
    return math.sqrt(sum(float(e) ** 2 for e in v.detach()))


# ---------------------------------------------------------------------------------------------
# Networks and options


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_network_shapes(resolution):
    gen, critic = tiny(resolution, ch=4, feature_dim=5)
    x = gen(torch.randn(3, 32))
    assert x.shape == (3, 3, resolution, resolution) and x.abs().max() <= 1
    assert critic(x).shape == (3, 5)
    blocks = gen.res_blocks if resolution == 128 else gen.blocks
    assert len(blocks) + 1 == int(math.log2(resolution // 4))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())


def test_options_defaults_and_errors():
    assert cramergan.parse_options(None) == cramergan.CramerGANOptions(ch=64, dim_z=128, feature_dim=256,
                                                                       generator_128="g_resnet5")
    assert cramergan.options_dict(cramergan.parse_options(OPTIONS)) == {**OPTIONS, "generator_128": "g_resnet5"}
    with pytest.raises(GeneratorError, match="unknown cramergan options"):
        cramergan.parse_options({"gp": 10})
    with pytest.raises(GeneratorError, match="cramergan option feature_dim=0"):
        cramergan.parse_options({"feature_dim": 0})
    with pytest.raises(GeneratorError, match="resolutions"):
        cramergan.build_discriminator(256, cramergan.parse_options(OPTIONS))
    assert cramergan.TRAIN_DEFAULTS == {"lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.5, 0.9), "n_dis": 5}


# ---------------------------------------------------------------------------------------------
# Losses


def test_surrogate_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    h, ref = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    expected = [norm(h[i] - ref[i]) - norm(h[i]) for i in range(3)]
    assert torch.allclose(cramergan.surrogate(h, ref), torch.tensor(expected, dtype=torch.float64))


def test_fake_batch_is_split_into_two_halves():
    real, fake = images(7, 0), images(7, 1)
    x_r, x_g, x_g2 = cramergan.split_batches(real, fake)
    assert torch.equal(x_r, real[:3]) and torch.equal(x_g, fake[:3]) and torch.equal(x_g2, fake[3:6])
    with pytest.raises(GeneratorError, match="at least 2"):
        cramergan.split_batches(real, fake[:1])


def test_generator_loss_is_the_energy_distance_and_reaches_the_generator():
    gen, critic = tiny()
    critic = critic.double()
    real, fake = images(4, 0), images(4, 1)
    h_r, h_g, h_g2 = critic(real[:2]), critic(fake[:2]), critic(fake[2:])
    expected = sum(norm(h_r[i] - h_g[i]) + norm(h_r[i] - h_g2[i]) - norm(h_g[i] - h_g2[i]) for i in range(2)) / 2
    assert math.isclose(cramergan.generator_loss(critic, fake, real).item(), expected, rel_tol=1e-9)

    critic = critic.float().requires_grad_(False)
    loss = cramergan.generator_loss(critic, gen(torch.randn(6, 32)), real.float())
    loss.backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None, name
    assert gen.linear.weight.grad.abs().sum() > 0 and gen.to_rgb.weight.grad.abs().sum() > 0


def test_critic_loss_is_the_surrogate_gap_plus_the_gradient_penalty():
    _, critic = tiny()
    critic = critic.double()
    real, fake = images(6, 2), images(6, 3)
    x_r, x_g, x_g2 = real[:3], fake[:3], fake[3:]
    h_r, h_g, h_g2 = critic(x_r), critic(x_g), critic(x_g2)
    mix = torch.rand(3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    # Direct penalty: one autograd call per interpolate x_hat = x_r + u (x_g - x_r), reference x'_g.
    expected = []
    for i in range(3):
        x = (x_r[i] + mix[i] * (x_g[i] - x_r[i])).detach().requires_grad_(True)
        h = critic(x[None])[0]
        (grad,) = torch.autograd.grad((h - h_g2[i]).norm() - h.norm(), x)
        expected.append((grad.norm() - 1) ** 2)
    penalty = cramergan.surrogate_penalty(critic, x_r, x_g, h_g2, mix)
    assert torch.allclose(penalty, torch.stack(expected).mean())
    penalty.backward()
    assert critic.convs[0].weight.grad.abs().sum() > 0  # differentiable in the critic's weights

    state = critic.penalty_rng.get_state()
    loss = cramergan.discriminator_loss(critic, real, fake)
    critic.penalty_rng.set_state(state)
    mix = torch.rand(3, generator=critic.penalty_rng).double()
    gap = sum(cramergan.surrogate(h_r, h_g2) - cramergan.surrogate(h_g, h_g2)) / 3
    assert cramergan.GP_WEIGHT == 10.0
    assert torch.allclose(loss, -gap + 10.0 * cramergan.surrogate_penalty(critic, x_r, x_g, h_g2, mix))


# ---------------------------------------------------------------------------------------------
# Training, sampling, checkpoints


def test_checkpoint_round_trip_and_per_seed_sampling(checkpoint, photos):
    gen = generators.load("cramergan", checkpoint=checkpoint, resolution=32)
    sampled = gen.sample([4, 5, 6])
    assert sampled.shape == (3, 32, 32, 3) and sampled.dtype == np.uint8 and sampled.std() > 0
    assert np.array_equal(gen.sample([5]), sampled[[1]])
    assert np.array_equal(gen.sample([6, 5, 4])[::-1], sampled)
    result = fit(cramergan, photos, resolve_config(cramergan, **TRAIN), cramergan.parse_options(OPTIONS))
    assert np.array_equal(NetworkGenerator("cramergan", result.generator, 32, "").sample([4, 5, 6]), sampled)
    assert gen.net.bn.running_var.sub(1).abs().sum() > 0  # eval uses the trained running statistics


def test_mismatched_checkpoints_are_reported(checkpoint, tmp_path):
    with pytest.raises(GeneratorError, match="is for arch 'cramergan', not 'mmdgan'"):
        generators.load("mmdgan", checkpoint=checkpoint, resolution=32)
    with pytest.raises(GeneratorError, match="resolution 32, not the requested 64"):
        generators.load("cramergan", checkpoint=checkpoint, resolution=64)
    for path in (checkpoint, checkpoint.with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)
    sidecar = tmp_path / checkpoint.with_suffix(".json").name
    meta = json.loads(sidecar.read_text())
    meta["options"]["dim_z"] = 64
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="does not fit the model"):
        generators.load("cramergan", checkpoint=sidecar, resolution=32)
