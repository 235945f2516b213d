"""ProGAN networks, fade-in, growth schedule, equalized LR, minibatch stddev, WGAN-GP, checkpoints."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import generators
from generators.training import GeneratorTraining
from generators import progan
from generators.base import SAMPLE_BATCH, GeneratorError, NetworkGenerator, isolated_rng
from generators.checkpoint import save_checkpoint
from generators.training import fit, resolve_config

TINY = progan.ProGANOptions(ch=8, dim_z=16)


def tiny_networks(resolution: int = 32, options: progan.ProGANOptions = TINY, seed: int = 0):
    with isolated_rng(seed):
        return progan.build_generator(resolution, options), progan.build_discriminator(resolution, options)


def photos(n: int = 16, resolution: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_network_shapes_at_every_level(resolution):
    g, d = tiny_networks(resolution, progan.ProGANOptions(ch=4, dim_z=16))
    assert g.dim_z == 16 and g.resolution == resolution
    # A fresh network is fully grown: target level, alpha 1.
    assert g.levels == progan.level_count(resolution) == int(math.log2(resolution)) - 1
    assert (int(g.level), float(g.alpha)) == (g.levels - 1, 1.0)
    assert (int(d.level), float(d.alpha)) == (d.levels - 1, 1.0)
    for level in range(g.levels):
        g.set_level(level, 0.5)
        d.set_level(level, 0.5)
        x = g(torch.randn(4, 16))
        assert x.shape == (4, 3, resolution, resolution)
        assert d(x).shape == (4,)
    g.eval()
    assert g(torch.randn(4, 16)).abs().max() <= 1


def test_output_is_linear_in_training_and_clamped_for_sampling():
    g, _ = tiny_networks()
    with torch.no_grad():
        g.to_rgb[3].weight.mul_(50)
    z = torch.randn(4, 16)
    raw = g(z)
    assert raw.abs().max() > 1  # linear output, as published: no tanh
    assert torch.equal(g.eval()(z), raw.clamp(-1, 1))


def test_channel_plan_follows_the_paper():
    # The authors' nf(): 512 up to 32 px, then halving: 256 at 64 px, 128 at 128 px.
    assert [progan.level_width(k, 512) for k in range(6)] == [512, 512, 512, 512, 256, 128]
    assert [progan.level_width(k, 8) for k in range(6)] == [8, 8, 8, 8, 4, 2]
    assert progan.level_width(5, 4) == 1  # never below one channel
    g, d = tiny_networks(128, progan.ProGANOptions(ch=8, dim_z=16))
    assert [rgb.weight.shape[1] for rgb in g.to_rgb] == [8, 8, 8, 8, 4, 2]
    assert [rgb.weight.shape[0] for rgb in d.from_rgb] == [8, 8, 8, 8, 4, 2]
    assert g.head.dense.weight.shape == (8 * 16, 16)


def test_options():
    assert progan.parse_options(None) == progan.ProGANOptions(ch=512, dim_z=512)
    assert progan.options_dict(progan.parse_options({"ch": 4})) == {"ch": 4, "dim_z": 512}
    with pytest.raises(GeneratorError, match="unknown progan options"):
        progan.parse_options({"ch": 4, "fmap_base": 3})
    for bad in ({"ch": 0}, {"dim_z": 2.5}, {"ch": True}):
        with pytest.raises(GeneratorError, match=f"{next(iter(bad))}=.*positive integer"):
            progan.parse_options(bad)
    with pytest.raises(GeneratorError, match="resolutions"):
        progan.build_generator(48, TINY)
    g, _ = tiny_networks()
    with pytest.raises(GeneratorError, match="level 4"):
        g.set_level(4, 1.0)
    with pytest.raises(GeneratorError, match="alpha"):
        g.set_level(1, 1.5)
    with pytest.raises(AssertionError):
        g(torch.randn(2, 7))


def test_sample_shape_range_and_determinism():
    g, _ = tiny_networks()
    gen = NetworkGenerator("progan", g, 32, "")
    images = gen.sample([4, 5, 6])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 and images.std() > 0
    assert np.array_equal(gen.sample([5]), images[[1]])
    seeds = list(range(SAMPLE_BATCH + 3))
    forward = gen.sample(seeds)
    assert np.array_equal(gen.sample(seeds[::-1])[::-1], forward)
    assert not np.array_equal(forward[0], forward[1])


def test_generator_fade_in_blend():
    g, _ = tiny_networks()
    z = torch.randn(3, 16)
    # Level 1 (8x8) fully grown: its image, upsampled to 32 px.
    g.set_level(1, 1.0)
    previous = g(z)
    assert torch.equal(previous, F.interpolate(previous[:, :, ::4, ::4], scale_factor=4))
    g.set_level(2, 0.0)
    assert torch.equal(g(z), previous)
    # At alpha 1 only the new block's toRGB speaks.
    h = g.blocks[1](g.head(z))
    new = F.interpolate(g.to_rgb[2](g.blocks[2](h)), scale_factor=2)
    g.set_level(2, 1.0)
    assert torch.allclose(g(z), new, atol=1e-6)
    g.set_level(2, 0.25)
    assert torch.allclose(g(z), 0.75 * previous + 0.25 * new, atol=1e-6)


def test_discriminator_fade_in_blend():
    _, d = tiny_networks()
    x = torch.randn(4, 3, 32, 32)
    d.set_level(1, 1.0)
    previous = d(x)
    # The level's view of an image is its average-pooled version.
    assert torch.allclose(d(F.interpolate(F.avg_pool2d(x, 4), scale_factor=4)), previous, atol=1e-5)
    d.set_level(2, 0.0)
    assert torch.allclose(d(x), previous, atol=1e-5)
    # At alpha 1 the lower level's fromRGB is unused; at alpha 0 the new block is.
    d.set_level(2, 1.0)
    full = d(x)
    assert not torch.allclose(full, previous, atol=1e-3)
    with torch.no_grad():
        d.from_rgb[1].weight.mul_(3)
    assert torch.equal(d(x), full)
    d.set_level(2, 0.0)
    with torch.no_grad():
        d.from_rgb[2].weight.mul_(3)
        d.from_rgb[1].weight.div_(3)
    assert torch.allclose(d(x), previous, atol=1e-5)


def test_reals_fade_like_the_generator():
    _, d = tiny_networks()
    real = torch.randn(2, 3, 32, 32)
    assert torch.equal(progan.fade_reals(real, d), real)  # fully grown: untouched
    d.set_level(2, 0.25)
    x16 = F.avg_pool2d(real, 2)
    x8_up = F.interpolate(F.avg_pool2d(x16, 2), scale_factor=2)
    expected = F.interpolate(0.75 * x8_up + 0.25 * x16, scale_factor=2)
    assert torch.allclose(progan.fade_reals(real, d), expected, atol=1e-6)


def test_schedule_splits_phases_and_ends_fully_grown():
    # 4 levels at 32 px -> 7 phases of 2 steps: stabilise 4x4, then fade/stabilise per level.
    assert [progan.schedule(s, 14, 4) for s in range(1, 15)] == [
        (0, 1.0), (1, 0.0), (1, 0.5), (1, 1.0), (1, 1.0), (2, 0.0), (2, 0.5), (2, 1.0), (2, 1.0),
        (3, 0.0), (3, 0.5), (3, 1.0), (3, 1.0), (3, 1.0)]
    for steps in (1, 2, 3, 7, 100, 1001):
        for levels in (4, 5, 6):
            plan = [progan.schedule(s, steps, levels) for s in range(1, steps + 1)]
            assert plan[-1] == (levels - 1, 1.0)
            assert all(0 <= a <= 1 for _, a in plan)
            assert plan == sorted(plan)  # never shrinks
    with pytest.raises(GeneratorError, match="step 0"):
        progan.schedule(0, 10, 4)
    # set_progress moves both networks.
    g, d = tiny_networks()
    progan.set_progress(g, d, 3, 14)
    assert (int(g.level), float(g.alpha), int(d.level), float(d.alpha)) == (1, 0.5, 1, 0.5)
    with pytest.raises(GeneratorError, match="step 11"):
        progan.schedule(11, 10, 4)


def test_training_follows_schedule_and_ends_fully_grown():
    seen = []

    def on_step(stats, gen):
        seen.append((int(gen.level), float(gen.alpha), stats.d_loss, stats.g_loss))

    config = resolve_config(progan, steps=7, batch_size=8, seed=3)
    with isolated_rng(3):
        before = progan.build_generator(32, TINY).state_dict()
    rng_state = torch.get_rng_state()
    result = fit(progan, photos(), config, TINY, on_step=on_step)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [(lvl, a) for lvl, a, _, _ in seen] == [progan.schedule(s, 7, 4) for s in range(1, 8)]
    assert all(np.isfinite([dl, gl]).all() for _, _, dl, gl in seen)
    g, d = result.generator, result.discriminator
    assert (int(g.level), float(g.alpha), int(d.level), float(d.alpha)) == (3, 1.0, 3, 1.0)
    after = g.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert {"head.dense.weight", "blocks.3.conv2.weight", "to_rgb.3.weight", "to_rgb.0.weight"} <= changed
    # Same seed, same run (the penalty's mixing weights included).
    again = fit(progan, photos(), config, TINY).generator.state_dict()
    assert all(torch.equal(after[k], again[k]) for k in after)


def test_equalized_learning_rate():
    with isolated_rng(0):
        conv = progan.EqualizedConv2d(64, 64, 3)
        x = torch.randn(2, 64, 5, 5)
    # Stored weights are N(0, 1); the He constant is applied at run time.
    assert abs(conv.weight.std().item() - 1) < 0.03 and not conv.bias.any()
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(64 * 9))
    expected = F.conv2d(x, conv.weight * math.sqrt(2 / (64 * 9)), conv.bias, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)
    # Effective weights have He's std sqrt(2 / fan_in): away from the zero padding, outputs have
    # twice the inputs' variance, which the following ReLU-like activation halves again.
    interior = conv(x)[:, :, 1:-1, 1:-1] - conv.bias.view(1, -1, 1, 1)
    assert interior.pow(2).mean().item() == pytest.approx(2 * x.pow(2).mean().item(), rel=0.15)
    linear = progan.EqualizedLinear(32, 4, gain=0.5)
    assert linear.scale == pytest.approx(0.5 / math.sqrt(32))
    v = torch.randn(3, 32)
    assert torch.allclose(linear(v), v @ (linear.weight * 0.5 / math.sqrt(32)).T, atol=1e-6)
    # The gradient reaching the stored weight carries the same scale.
    linear(v).sum().backward()
    assert torch.allclose(linear.weight.grad, (v.sum(0) * 0.5 / math.sqrt(32)).expand(4, 32), atol=1e-6)
    # Gains as published: linear toRGB and score, sqrt(2)/4 for the latent's dense layer.
    g, d = tiny_networks()
    assert g.to_rgb[3].scale == pytest.approx(1 / math.sqrt(8))
    assert g.head.dense.scale == pytest.approx(math.sqrt(2) / 4 / math.sqrt(16))
    assert d.head.out.scale == pytest.approx(1 / math.sqrt(8))
    assert not any(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in [*g.modules(), *d.modules()])


def test_pixel_norm_normalises_every_generator_feature_map():
    x = torch.randn(2, 5, 3, 3) * 7
    y = progan.pixel_norm(x)
    assert torch.allclose(y.pow(2).mean(dim=1), torch.ones(2, 3, 3), atol=1e-5)
    assert torch.allclose(progan.pixel_norm(3 * x), y, atol=1e-6)  # scale invariant per pixel
    g, _ = tiny_networks()
    maps = []
    for module in [g.head, *g.blocks[1:]]:
        module.register_forward_hook(lambda m, i, out: maps.append(out))
    g(torch.randn(2, 16) * 5)
    assert [m.shape[-1] for m in maps] == [4, 8, 16, 32]
    for m in maps:
        assert torch.allclose(m.pow(2).mean(dim=1), torch.ones_like(m[:, 0]), atol=1e-4)
    # The latent is normalised before the first layer.
    latents = []
    g.head.dense.register_forward_pre_hook(lambda m, i: latents.append(i[0]))
    g(torch.randn(3, 16) * 5)
    assert torch.allclose(latents[0].pow(2).mean(dim=1), torch.ones(3), atol=1e-5)


def test_minibatch_stddev_per_group_as_one_channel():
    x = torch.randn(8, 3, 4, 4)
    out = progan.minibatch_stddev(x)
    assert out.shape == (8, 4, 4, 4) and torch.equal(out[:, :3], x)
    feature = out[:, 3]
    assert torch.equal(feature, feature[:, :1, :1].expand(8, 4, 4))  # constant map per sample
    # Groups of 4, strided as in the authors' code: samples {0, 2, 4, 6} and {1, 3, 5, 7}.
    for n in range(8):
        members = x[n % 2::2].double().numpy()
        expected = np.sqrt(members.var(axis=0) + 1e-8).mean()
        assert feature[n, 0, 0].item() == pytest.approx(expected, rel=1e-5)
    # Changing a sample of one group leaves the other group's feature alone.
    y = x.clone()
    y[0] += 5
    moved = progan.minibatch_stddev(y)[:, 3, 0, 0]
    assert torch.equal(moved[1::2], feature[1::2, 0, 0]) and not torch.allclose(moved[::2], feature[::2, 0, 0])
    assert [progan.mbstd_group_size(n) for n in (1, 2, 3, 4, 6, 8, 9, 10)] == [1, 2, 3, 4, 3, 4, 3, 2]
    assert progan.minibatch_stddev(x[:1])[0, 3, 0, 0].item() == pytest.approx(1e-4)


def test_gradient_penalty_matches_direct_computation():
    real, fake = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    mix = torch.tensor([0.0, 0.3, 1.0])
    # Linear critic: the gradient is w everywhere.
    w = torch.randn(3, 4, 4, requires_grad=True)
    penalty = progan.gradient_penalty(lambda x: (x * w).sum(dim=(1, 2, 3)), real, fake, mix)
    assert penalty.item() == pytest.approx((w.norm().item() - 1) ** 2, rel=1e-5)
    # Quadratic critic: the gradient is 2 x_hat, with x_hat = fake + mix (real - fake).
    penalty = progan.gradient_penalty(lambda x: x.pow(2).sum(dim=(1, 2, 3)), real, fake, mix)
    x_hat = fake.numpy() + mix.numpy()[:, None, None, None] * (real.numpy() - fake.numpy())
    norms = np.linalg.norm((2 * x_hat).reshape(3, -1), axis=1)
    assert penalty.item() == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-5)
    # The penalty is differentiable in the critic's parameters (double backprop).
    (grad,) = torch.autograd.grad(
        progan.gradient_penalty(lambda x: (x * w).sum(dim=(1, 2, 3)), real, fake, mix), w)
    assert torch.allclose(grad, 2 * (w.norm() - 1) * w / w.norm(), atol=1e-5)


def test_losses_are_wgan_gp_with_drift():
    _, d = tiny_networks()
    with torch.no_grad():
        d.head.out.bias.fill_(40)  # large real scores, so the drift term is far above rounding
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    state = d.penalty_rng.get_state()
    loss = progan.discriminator_loss(d, real, fake)
    mix = torch.rand(4, generator=torch.Generator().set_state(state))
    r, f = d(real), d(fake)
    wgan_gp = f.mean() - r.mean() + 10 * progan.gradient_penalty(d, real, fake, mix)
    assert (loss - wgan_gp).item() == pytest.approx(0.001 * r.pow(2).mean().item(), rel=1e-3)
    assert progan.generator_loss(d, fake, real).item() == pytest.approx(-f.mean().item(), rel=1e-6)
    assert progan.TRAIN_DEFAULTS == {"lr_g": 1e-3, "lr_d": 1e-3, "betas": (0.0, 0.99), "n_dis": 1}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "progan_tiny"
    return generators.train("progan", photos(), out,
                            GeneratorTraining(steps=4, batch_size=8, seed=5),
                            options=progan.options_dict(TINY))


def test_checkpoint_round_trip(trained):
    meta = json.loads(trained.with_suffix(".json").read_text())
    assert meta["options"] == {"ch": 8, "dim_z": 16}
    train = meta["train"]
    assert (train["lr_g"], train["lr_d"], train["betas"], train["n_dis"]) == (1e-3, 1e-3, [0.0, 0.99], 1)
    state = load_file(trained)
    assert int(state["level"]) == 3 and float(state["alpha"]) == 1.0
    in_memory = fit(progan, photos(), resolve_config(progan, steps=4, batch_size=8, seed=5), TINY).generator
    loaded = generators.load("progan", checkpoint=trained, resolution=32)
    assert np.array_equal(loaded.sample([0, 3, 9]),
                          NetworkGenerator("progan", in_memory, 32, "").sample([0, 3, 9]))


def test_checkpoint_keeps_the_level_it_was_saved_at(tmp_path):
    g, _ = tiny_networks()
    g.set_level(1, 1.0)
    save_checkpoint(tmp_path / "mid", g, arch="progan", resolution=32, options=progan.options_dict(TINY),
                    train=None)
    images = generators.load("progan", checkpoint=tmp_path / "mid", resolution=32).sample([0])
    # An 8x8 image shown at 32 px: every 4x4 block is one colour.
    assert np.array_equal(images, np.repeat(np.repeat(images[:, ::4, ::4], 4, axis=1), 4, axis=2))


def test_mismatched_checkpoint_is_a_clear_error(trained, tmp_path):
    for path in (trained, trained.with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)
    stem = tmp_path / trained.stem
    sidecar = stem.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "options": {"ch": 4, "dim_z": 16}}))
    with pytest.raises(GeneratorError, match="shape mismatches"):
        generators.load("progan", checkpoint=stem, resolution=32)
    with pytest.raises(GeneratorError, match="is for arch 'progan', not 'sngan'"):
        generators.load("sngan", checkpoint=stem, resolution=32)
    sidecar.write_text(json.dumps({**meta, "options": {"ch": 8, "dim_z": 16, "depth": 2}}))
    with pytest.raises(GeneratorError, match="unknown progan options"):
        generators.load("progan", checkpoint=stem, resolution=32)
