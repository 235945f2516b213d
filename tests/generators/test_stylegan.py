"""StyleGAN: shapes, seed determinism, AdaIN, noise, truncation, R1, training and checkpoints."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators
from generators.training import GeneratorTraining
from generators import style_layers as sl
from generators import stylegan
from generators.base import GeneratorError, NetworkGenerator, isolated_rng, seed_latents
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos, tiny_networks

TINY = TINY_OPTIONS["stylegan"]


def tiny(resolution=32, seed=0, **extra):
    return tiny_networks(stylegan, TINY, resolution, seed, **extra)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_and_range(resolution):
    g, d = tiny(resolution, ch=4)
    z = torch.randn(2, 16)
    x = g(z)
    assert x.shape == (2, 3, resolution, resolution)
    assert d(x).shape == (2,)
    assert g.num_ws == len(g.layers) == 2 * int(np.log2(resolution)) - 2
    assert d.blocks[0].skip is None  # ProGAN's plain D blocks, not StyleGAN2's residual ones
    g.eval()
    y = g(z, seeds=[0, 1])
    assert y.abs().max() <= 1 and y.std() > 0


def test_options_are_validated():
    assert stylegan.parse_options(None) == stylegan.StyleGANOptions(
        ch=512, dim_z=512, n_mlp=8, truncation_psi=1.0, mixing_prob=0.9, r1_gamma=10.0, mbstd_group=4,
        noise_mode="seeded")
    with pytest.raises(GeneratorError, match=r"noise_mode='random' must be one of \['seeded', 'const'\]"):
        stylegan.parse_options({"noise_mode": "random"})
    with pytest.raises(GeneratorError, match="unknown stylegan options.*r1_interval"):
        stylegan.parse_options({"r1_interval": 16})
    with pytest.raises(GeneratorError, match="mixing_prob"):
        stylegan.parse_options({"mixing_prob": 2})
    with pytest.raises(GeneratorError, match="resolutions"):
        tiny(48)
    # NVIDIA's fmap_base 8192, fmap_max 512.
    assert sl.layer_widths(128, 512, stylegan.CHANNEL_MULTIPLIER) == {
        4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128}


def test_samples_depend_on_their_seed_only():
    g, _ = tiny()
    gen = NetworkGenerator("stylegan", g, 32, "")
    many = gen.sample([4, 5, 6])
    assert np.array_equal(gen.sample([5]), many[[1]])
    seeds = list(range(35))
    forward = gen.sample(seeds)
    assert np.array_equal(gen.sample(seeds[::-1])[::-1], forward)
    assert not np.array_equal(forward[0], forward[1])


def test_adain_output_statistics_equal_the_style():
    g, _ = tiny()
    adain = g.layers[3].adain
    with torch.no_grad():
        adain.affine.weight.normal_()  # make the style depend visibly on w
    x, w = torch.randn(3, 8, 16, 16) * 5 + 2, torch.randn(3, 16)
    out = adain(x, w)
    scale, bias = adain.style(w)
    assert torch.allclose(out.mean(dim=(2, 3)), bias, atol=1e-4)
    assert torch.allclose(out.std(dim=(2, 3), unbiased=False), scale.abs(), atol=1e-4)
    # The statistics of the input do not leak through.
    assert torch.allclose(adain(x * 3 + 7, w), out, atol=1e-4)


def test_noise_strength_is_per_channel_and_eval_noise_is_fixed():
    g, _ = tiny(mixing_prob=0.0)
    assert g.layers[2].noise.strength.shape == (8,)
    for layer in g.layers:
        layer.noise.strength.data.fill_(1.0)
    z = torch.randn(2, 16)
    with torch.no_grad():
        g.eval()
        assert torch.equal(g(z, seeds=[3, 4]), g(z, seeds=[3, 4]))
        g.train()
        assert not torch.equal(g(z), g(z))


def test_truncation_psi_zero_collapses_to_w_avg_and_one_is_identity():
    g, _ = tiny(noise_mode="const")
    g.mapping.w_avg.copy_(torch.randn(16))
    z = seed_latents(range(5), 16)
    g.eval()
    with torch.no_grad():
        plain = g.synthesis(g.mapping(z).unsqueeze(1).repeat(1, g.num_ws, 1)).clamp(-1, 1)
        assert torch.equal(g(z), plain)
        g.truncation_psi = 0.0
        out = g(z)
    assert all(torch.equal(out[i], out[0]) for i in range(5))
    assert not torch.equal(plain[0], plain[1])


def test_r1_and_loss_at_every_update():
    _, d = tiny()
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x).sum(), x)
    assert torch.allclose(sl.r1_penalty(d, real), grad.square().sum(dim=(1, 2, 3)), rtol=1e-4)
    plain = torch.nn.functional.softplus(d(fake)).mean() + torch.nn.functional.softplus(-d(real)).mean()
    expected = plain + 5.0 * grad.square().sum(dim=(1, 2, 3)).mean()  # gamma / 2 = 5
    assert torch.allclose(stylegan.discriminator_loss(d, real, fake), expected, rtol=1e-4)
    assert torch.allclose(stylegan.discriminator_loss(d, real, fake), expected, rtol=1e-4)


def test_discriminator_downsamples_by_blur_conv_then_average_pool_as_d_basic():
    _, d = tiny(64)
    block = d.blocks[1]  # 32 -> 16 px
    with torch.no_grad():
        block.conv1.bias.normal_()
    x = torch.randn(2, 8, 32, 32)
    h = block.conv0(x)
    # By hand: [1, 2, 1] blur with 'same' padding, 3x3 conv (pad 1), 2x2 average, bias, lrelu * sqrt(2).
    k = torch.tensor([1.0, 2.0, 1.0])
    k = torch.outer(k, k) / 16
    blurred = F.conv2d(F.pad(h, [1, 1, 1, 1]), k.expand(8, 1, 3, 3), groups=8)
    conv = F.conv2d(blurred, block.conv1.weight * block.conv1.scale, padding=1)
    pooled = (conv[:, :, 0::2, 0::2] + conv[:, :, 1::2, 0::2] + conv[:, :, 0::2, 1::2] + conv[:, :, 1::2, 1::2]) / 4
    expected = F.leaky_relu(pooled + block.conv1.bias.view(1, -1, 1, 1), 0.2) * 2**0.5
    out = block(x)
    assert out.shape == (2, 8, 16, 16) and torch.allclose(out, expected, atol=1e-5)
    # NVIDIA's fused form (used from 128 px): one stride-2 conv with the 3x3 kernel spread over 4x4.
    w = F.pad(block.conv1.weight * block.conv1.scale, [1, 1, 1, 1])
    fused = (w[..., 1:, 1:] + w[..., :-1, 1:] + w[..., 1:, :-1] + w[..., :-1, :-1]) / 4
    assert torch.allclose(F.conv2d(blurred, fused, stride=2, padding=1), pooled, atol=1e-5)


def test_training_changes_weights_and_leaves_global_rng_alone():
    opts = stylegan.parse_options(TINY)
    with isolated_rng(1):
        before = stylegan.build_generator(32, opts).state_dict()
    rng_state = torch.get_rng_state()
    seen = []
    result = fit(stylegan, random_photos(), resolve_config(stylegan, steps=3, batch_size=4, seed=1), opts,
                 on_step=lambda stats, gen: seen.append(stats))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    for key in ("const", "layers.1.conv.weight", "layers.2.adain.affine.weight", "to_rgb.weight",
                "mapping.layers.0.weight", "mapping.w_avg", "layers.4.noise.strength"):
        assert not torch.equal(before[key], after[key]), key


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    path = generators.train("stylegan", random_photos(8), tmp_path / "g",
                            GeneratorTraining(steps=2, batch_size=4, seed=0),
                            options={**TINY, "truncation_psi": 0.7})
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["options"]["truncation_psi"] == 0.7
    assert (meta["train"]["lr_g"], meta["train"]["betas"], meta["train"]["n_dis"]) == (0.001, [0.0, 0.99], 1)
    loaded = generators.load("stylegan", checkpoint=path, resolution=32)
    assert loaded.net.truncation_psi == 0.7
    images = loaded.sample([0, 1, 2])
    assert images.shape == (3, 32, 32, 3)
    assert np.array_equal(generators.load("stylegan", checkpoint=path, resolution=32).sample([2]), images[[2]])
    with pytest.raises(GeneratorError, match="is for arch 'stylegan', not 'stylegan2'"):
        generators.load("stylegan2", checkpoint=path, resolution=32)
    with pytest.raises(GeneratorError, match="resolution 32, not the requested 64"):
        generators.load("stylegan", checkpoint=path, resolution=64)
    sidecar = path.with_suffix(".json")
    meta["options"]["dim_z"] = 12
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="shape mismatches"):
        generators.load("stylegan", checkpoint=path, resolution=32)
