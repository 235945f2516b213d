"""StyleGAN2: shapes, seed determinism, demodulation, truncation, noise, R1, training and checkpoints."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators
from generators.training import GeneratorTraining
from generators import style_layers as sl
from generators import stylegan, stylegan2, stylegan3
from generators.base import GeneratorError, NetworkGenerator, isolated_rng, render, seed_latents
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos, tiny_networks

TINY = TINY_OPTIONS["stylegan2"]


def tiny(resolution=32, seed=0, **extra):
    return tiny_networks(stylegan2, TINY, resolution, seed, **extra)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_shapes_and_range(resolution):
    g, d = tiny(resolution, ch=4)
    z = torch.randn(2, 16)
    x = g(z)
    assert x.shape == (2, 3, resolution, resolution)
    assert d(x).shape == (2,)
    # Skip generator: one toRGB per resolution 4..R, two layers per resolution above 4.
    assert len(g.to_rgbs) == int(np.log2(resolution)) - 1
    assert g.num_ws == 2 * int(np.log2(resolution)) - 2
    g.eval()
    y = g(z, seeds=[0, 1])
    assert y.abs().max() <= 1 and y.std() > 0


def test_options_are_validated():
    assert stylegan2.parse_options(None) == stylegan2.StyleGAN2Options(
        ch=512, channel_multiplier=2, dim_z=512, n_mlp=8, truncation_psi=1.0, mixing_prob=0.9,
        r1_gamma=10.0, r1_interval=16, pl_weight=2.0, pl_interval=4, pl_decay=0.01, pl_batch_shrink=2,
        mbstd_group=4, conv_clamp=0.0, noise_mode="seeded")
    with pytest.raises(GeneratorError, match="noise_mode=3 must be one of"):
        stylegan2.parse_options({"noise_mode": 3})
    with pytest.raises(GeneratorError, match="unknown stylegan2 options"):
        stylegan2.parse_options({"width": 3})
    with pytest.raises(GeneratorError, match="truncation_psi"):
        stylegan2.parse_options({"truncation_psi": 1.5})
    with pytest.raises(GeneratorError, match="n_mlp"):
        stylegan2.parse_options({"n_mlp": 0})
    with pytest.raises(GeneratorError, match="resolutions"):
        tiny(48)
    # Published widths: 512 up to 32 px, then halving (config-f: channel_base 32768).
    assert sl.layer_widths(128, 512, 2) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256}
    assert stylegan2.options_dict(stylegan2.parse_options({"truncation_psi": 0.7}))["truncation_psi"] == 0.7


def test_samples_depend_on_their_seed_only():
    g, _ = tiny()
    gen = NetworkGenerator("stylegan2", g, 32, "")
    many = gen.sample([4, 5, 6])
    assert np.array_equal(gen.sample([5]), many[[1]])
    seeds = list(range(35))
    forward = gen.sample(seeds)
    assert np.array_equal(gen.sample(seeds[::-1])[::-1], forward)
    assert not np.array_equal(forward[0], forward[1])


def test_demodulated_weights_have_unit_norm_per_output_channel():
    g, _ = tiny()
    w = torch.randn(3, 16)
    for layer in g.layers:
        weight = layer.conv.modulated_weight(w)  # (N, out, in, k, k)
        norms = weight.square().sum(dim=(2, 3, 4)).sqrt()
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    # toRGB is modulated but not demodulated.
    rgb = g.to_rgbs[0].conv.modulated_weight(w).square().sum(dim=(2, 3, 4)).sqrt()
    assert not torch.allclose(rgb, torch.ones_like(rgb), atol=1e-2)


def test_conv_clamp_bounds_every_layer_output():
    g, _ = tiny(conv_clamp=0.0625)
    seen = []
    for layer in g.layers:
        layer.register_forward_hook(lambda mod, args, out: seen.append(out.abs().max().item()))
    # toRGB outputs include the upsampled previous image, added after the clamp: watch the conv.
    rgb = g.to_rgbs[0]
    rgb.register_forward_hook(lambda mod, args, out: seen.append(out.abs().max().item()))
    g(torch.randn(2, 16))
    assert len(seen) == len(g.layers) + 1 and max(seen) <= 0.0625
    unclamped, _ = tiny()
    assert not torch.equal(unclamped(torch.ones(1, 16)), g(torch.ones(1, 16)))


def test_grouped_modulated_conv_equals_per_sample_conv():
    g, _ = tiny()
    conv = g.layers[1].conv  # the upsampling one
    x, w = torch.randn(3, 8, 4, 4), torch.randn(3, 16)
    together = conv(x, w)
    alone = torch.cat([conv(x[i:i + 1], w[i:i + 1]) for i in range(3)])
    assert together.shape == (3, 8, 8, 8)
    assert torch.allclose(together, alone, atol=1e-5)


def test_truncation_psi_zero_collapses_to_w_avg_and_one_is_identity():
    g, _ = tiny(noise_mode="const")
    g.mapping.w_avg.copy_(torch.randn(16))
    z = seed_latents(range(5), 16)
    g.eval()
    with torch.no_grad():
        plain = g.synthesis(g.mapping(z).unsqueeze(1).repeat(1, g.num_ws, 1)).clamp(-1, 1)
        assert torch.equal(g(z), plain)  # psi = 1 (the default) changes nothing
        g.truncation_psi = 0.0
        out = g(z)
        centre = g.synthesis(g.mapping.w_avg.view(1, 1, -1).repeat(1, g.num_ws, 1)).clamp(-1, 1)
    assert all(torch.equal(out[i], out[0]) for i in range(5))
    assert torch.allclose(out[0], centre[0], atol=1e-4)  # batch 5 vs batch 1 kernels
    w = torch.randn(4, 16)
    assert torch.allclose(sl.truncate(w, g.mapping.w_avg, 0.5), (w + g.mapping.w_avg) / 2)


def test_w_avg_is_an_ema_of_mapped_latents_in_training_only():
    g, _ = tiny(mixing_prob=0.0)
    z = torch.randn(6, 16)
    before = g.mapping.w_avg.clone()
    with torch.no_grad():
        w = g.mapping(z, update_avg=False)
        g.train()(z)
    assert torch.allclose(g.mapping.w_avg, before + (w.mean(0) - before) * (1 - 0.995), atol=1e-6)
    after = g.mapping.w_avg.clone()
    g.eval()(z, seeds=range(6))
    assert torch.equal(g.mapping.w_avg, after)


def test_const_eval_noise_is_the_stored_maps_and_training_noise_is_random():
    g, _ = tiny(mixing_prob=0.0, noise_mode="const")
    for layer in g.layers:
        layer.noise.strength.data.fill_(1.0)
    z = torch.randn(2, 16)
    g.eval()
    with torch.no_grad():
        assert torch.equal(g(z), g(z))
        assert torch.equal(g(z), g.synthesis(g.mapping(z).unsqueeze(1).repeat(1, g.num_ws, 1)).clamp(-1, 1))
        g.train()
        assert not torch.equal(g(z), g(z))
    # Each model has its own constant maps (random at construction, like NVIDIA's noise_const).
    other, _ = tiny(seed=7)
    assert not any(torch.equal(a.noise.const, b.noise.const) for a, b in zip(g.layers, other.layers))
    assert not torch.equal(g.layers[1].noise.const, g.layers[2].noise.const)


STYLE_FAMILIES = pytest.mark.parametrize("family", [stylegan, stylegan2], ids=lambda f: f.NAME)


def noisy(family, seed=0, **extra):
    """A tiny eval-mode generator of `family` whose noise shows: every strength 1, psi 0 (one w)."""
    g, _ = tiny_networks(family, TINY_OPTIONS[family.NAME], 32, seed, truncation_psi=0.0, **extra)
    with torch.no_grad():
        for layer in g.layers:
            layer.noise.strength.fill_(1.0)
    return g.eval()


@STYLE_FAMILIES
def test_seeded_noise_makes_images_differ_even_with_one_w(family):
    seeded = render(noisy(family), [0, 1], "cpu")
    assert not np.array_equal(seeded[0], seeded[1])
    # NVIDIA's const mode: with every seed mapped to the same w, one image for all seeds.
    const = render(noisy(family, noise_mode="const"), [0, 1], "cpu")
    assert np.array_equal(const[0], const[1])
    with pytest.raises(GeneratorError, match="noise_mode 'seeded'.*pass one seed per latent"):
        noisy(family)(torch.zeros(2, TINY_OPTIONS[family.NAME]["dim_z"]))


@STYLE_FAMILIES
def test_seeded_noise_image_is_the_same_in_any_batch_and_position(family):
    g = noisy(family)
    g.truncation_psi = 1.0
    alone = render(g, [5], "cpu")
    assert np.array_equal(render(g, [4, 5, 6], "cpu")[[1]], alone)
    seeds = list(range(40))  # two fixed-size batches, the second one padded
    forward = render(g, seeds, "cpu")
    assert np.array_equal(render(g, seeds[::-1], "cpu")[::-1], forward)
    assert np.array_equal(forward[[5]], alone)
    maps = g.noise_maps([5, 6])
    assert all(torch.equal(m[:1], n) for m, n in zip(maps, g.noise_maps([5])))
    assert [m.shape[1:] for m in maps] == [layer.noise.const.shape[1:] for layer in g.layers]


@STYLE_FAMILIES
def test_two_models_do_not_share_noise(family):
    a, b = noisy(family, seed=0), noisy(family, seed=1)
    assert not any(torch.equal(m, n) for m, n in zip(a.noise_maps([7]), b.noise_maps([7])))
    # The noise follows the weights: b loaded with a's state dict draws a's noise.
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(m, n) for m, n in zip(a.noise_maps([7]), b.noise_maps([7])))
    # Not the latent's stream either: seed s's latent and its first noise values differ.
    first = a.noise_maps([7])[-1].flatten()[:16]
    assert not torch.equal(first, torch.randn(16, generator=torch.Generator().manual_seed(7)))


def test_style_mixing_switches_w_at_a_cutoff():
    g, _ = tiny()
    w = torch.randn(3, 16)
    rng = torch.Generator().manual_seed(0)
    ws = sl.broadcast_styles(w, g.num_ws, mixing_prob=1.0, mapping=g.mapping, rng=rng)
    first = (ws == w[:, None]).all(dim=2).all(dim=0)
    assert first[0] and not first.all()
    cutoff = int(first.long().argmin())
    assert first[:cutoff].all() and not first[cutoff:].any()
    assert torch.equal(sl.broadcast_styles(w, g.num_ws, mixing_prob=0.0, mapping=g.mapping, rng=rng),
                       w[:, None].expand(-1, g.num_ws, -1))


def test_r1_is_the_squared_gradient_norm_and_lazy_r1_is_its_own_step():
    g, d = tiny()
    real = torch.randn(4, 3, 32, 32)
    direct = []
    for i in range(4):
        x = real[i:i + 1].clone().requires_grad_(True)
        # Minibatch stddev mixes samples, so each sample's gradient is taken on the whole batch.
        batch = torch.cat([real[:i], x, real[i + 1:]])
        (grad,) = torch.autograd.grad(d(batch).sum(), x)
        direct.append(grad.square().sum())
    assert torch.allclose(sl.r1_penalty(d, real), torch.stack(direct), rtol=1e-4)

    fake = torch.randn(4, 3, 32, 32)
    d.r1_gamma, d.r1_interval = 10.0, 2
    plain = torch.nn.functional.softplus(d(fake)).mean() + torch.nn.functional.softplus(-d(real)).mean()
    r1 = sl.r1_penalty(d, real).mean() * 10.0 / 2
    # Lazy (interval 2): the D loss has no R1; the regulariser step carries it (NVIDIA's Dreg).
    assert torch.allclose(stylegan2.discriminator_loss(d, real, fake), plain)
    lazy = stylegan2.lazy_regularizers(g, d)["d"]
    assert lazy.interval == 2 and torch.allclose(lazy.penalty(real), r1)
    # Every update (interval 1, NVIDIA's Dboth): R1 is part of the D loss, no separate step.
    d.r1_interval = 1
    assert torch.allclose(stylegan2.discriminator_loss(d, real, fake), plain + r1, rtol=1e-5)
    assert "d" not in stylegan2.lazy_regularizers(g, d)
    assert torch.allclose(stylegan2.generator_loss(d, fake, real),
                          torch.nn.functional.softplus(-d(fake)).mean())


@pytest.mark.parametrize("family", [stylegan, stylegan2, stylegan3], ids=lambda f: f.NAME)
def test_discriminator_sees_fakes_and_reals_in_separate_batches(family):
    _, d = tiny_networks(family, TINY_OPTIONS[family.NAME], r1_gamma=0.0)
    fake = torch.randn(4, 3, 32, 32)
    real_a, real_b = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32) * 2
    seen = []
    d.register_forward_hook(lambda mod, args, out: seen.append((args[0], out.detach())))

    def fake_logits_of_loss(real):
        # The logits D gave the fake rows in the passes the loss made.
        seen.clear()
        loss = family.discriminator_loss(d, real, fake)
        rows = [out[i] for x, out in seen for i in range(len(x)) if any(torch.equal(x[i], f) for f in fake)]
        return loss, torch.stack(rows)

    loss_a, fake_a = fake_logits_of_loss(real_a)
    loss_b, fake_b = fake_logits_of_loss(real_b)
    assert fake_a.shape == (4,) and torch.equal(fake_a, fake_b)
    with torch.no_grad():
        fake_term = F.softplus(d(fake)).mean()
        for real, loss in ((real_a, loss_a), (real_b, loss_b)):
            assert torch.allclose(loss, fake_term + F.softplus(-d(real)).mean(), rtol=1e-6)


@pytest.mark.parametrize("family", [stylegan2, stylegan3], ids=lambda f: f.NAME)
def test_residual_discriminator_block_is_blur_and_strided_conv(family):
    _, d = tiny_networks(family, TINY_OPTIONS[family.NAME], 32)
    block = d.blocks[0]
    with torch.no_grad():
        block.conv1.bias.normal_()
    x = torch.randn(2, block.conv0.weight.shape[1], 32, 32)
    h = block.conv0(x)
    # StyleGAN2: [1, 3, 3, 1] blur padded (2, 2), then a 3x3 conv with stride 2 and no padding;
    # shortcut: blur padded (1, 1), 1x1 stride-2 conv; sum / sqrt(2).
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(k, k) / 64
    c = h.shape[1]
    main = F.conv2d(F.conv2d(F.pad(h, [2, 2, 2, 2]), k.expand(c, 1, 4, 4), groups=c),
                    block.conv1.weight * block.conv1.scale, stride=2)
    main = F.leaky_relu(main + block.conv1.bias.view(1, -1, 1, 1), 0.2) * 2**0.5
    c = x.shape[1]
    skip = F.conv2d(F.conv2d(F.pad(x, [1, 1, 1, 1]), k.expand(c, 1, 4, 4), groups=c),
                    block.skip.weight * block.skip.scale, stride=2)
    assert torch.allclose(block(x), (main + skip) / 2**0.5, atol=1e-5)


def test_path_length_penalty_equals_a_direct_autograd_computation():
    g, _ = tiny(mixing_prob=0.0, pl_weight=3.0, pl_decay=0.25)
    g = g.double()
    with torch.no_grad():
        for layer in g.layers:
            layer.noise.strength.fill_(0.5)  # the training noise is part of the mapping differentiated
    g.pl_mean.fill_(0.2)
    z = torch.randn(6, 16, dtype=torch.float64)
    rng_state = g.rng.get_state()
    penalty = stylegan2.path_length_penalty(g, z)

    # Direct: replay the same noise draws, then a vector-Jacobian product per image on its own.
    g.rng.set_state(rng_state)
    kept = z[:3]  # batch 6 // pl_batch_shrink 2
    ws = g.mapping(kept).detach().unsqueeze(1).repeat(1, g.num_ws, 1)
    noise = [torch.randn(3, 1, *layer.noise.const.shape[2:], generator=g.rng).double() for layer in g.layers]
    y = torch.randn(3, 3, 32, 32, generator=g.rng).double() / 32
    lengths = []
    for i in range(3):
        def image_i(w, i=i):
            return g.synthesis(w[None], [n[i:i + 1] for n in noise])[0]
        _, jt_y = torch.autograd.functional.vjp(image_i, ws[i], y[i])  # (num_ws, w_dim)
        lengths.append(jt_y.square().sum(dim=1).mean().sqrt())
    a = torch.stack(lengths)
    mean = 0.2 + 0.25 * (a.mean() - 0.2)  # pl_mean moved by pl_decay towards mean |J^T y|
    assert g.pl_mean.item() == pytest.approx(mean.item(), rel=1e-9)
    assert penalty.item() == pytest.approx((3.0 * (a - mean).square().mean()).item(), rel=1e-9)
    penalty.backward()
    assert g.layers[2].conv.weight.grad.abs().sum() > 0 and g.mapping.layers[0].weight.grad.abs().sum() > 0


def test_lazy_regularisation_takes_its_own_steps_with_nvidia_adam_settings(monkeypatch):
    adams = []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            self.kwargs, self.steps = kwargs, 0
            adams.append(self)

        def step(self, closure=None):
            self.steps += 1
            return super().step(closure)

    r1_calls, pl_means = [], []
    real_r1 = sl.r1_penalty
    monkeypatch.setattr(sl, "r1_penalty", lambda d, x: r1_calls.append(1) or real_r1(d, x))
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    opts = stylegan2.parse_options({**TINY, "r1_interval": 2})
    fit(stylegan2, random_photos(), resolve_config(stylegan2, steps=6, batch_size=4, seed=0), opts,
        on_step=lambda stats, gen: pl_means.append(gen.pl_mean.item()))
    # Path length on G updates 1 and 5 (every pl_interval 4), R1 on D updates 1, 3, 5.
    changed = [i + 1 for i in range(6) if pl_means[i] != (pl_means[i - 1] if i else 0.0)]
    assert changed == [1, 5] and len(r1_calls) == 3
    opt_g, opt_d = adams
    assert (opt_g.steps, opt_d.steps) == (6 + 2, 6 + 3)
    # NVIDIA's mb_ratio = k / (k + 1): lr * ratio, betas ** ratio.
    assert opt_g.kwargs["lr"] == pytest.approx(0.002 * 4 / 5)
    assert opt_g.kwargs["betas"] == pytest.approx((0.0, 0.99 ** (4 / 5)))
    assert opt_d.kwargs["lr"] == pytest.approx(0.002 * 2 / 3)
    assert opt_d.kwargs["betas"] == pytest.approx((0.0, 0.99 ** (2 / 3)))


def test_training_changes_weights_and_leaves_global_rng_alone():
    opts = stylegan2.parse_options({**TINY, "r1_interval": 2})
    with isolated_rng(1):
        before = stylegan2.build_generator(32, opts).state_dict()
    rng_state = torch.get_rng_state()
    seen = []
    result = fit(stylegan2, random_photos(), resolve_config(stylegan2, steps=3, batch_size=4, seed=1), opts,
                 on_step=lambda stats, gen: seen.append(stats))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    for key in ("const", "layers.1.conv.weight", "to_rgbs.0.bias", "mapping.layers.0.weight", "mapping.w_avg"):
        assert not torch.equal(before[key], after[key]), key
    assert torch.equal(before["layers.3.noise.const"], after["layers.3.noise.const"])


def test_checkpoint_round_trip_keeps_truncation(tmp_path):
    options = {**TINY, "truncation_psi": 0.5}
    path = generators.train("stylegan2", random_photos(8), tmp_path / "g",
                            GeneratorTraining(steps=2, batch_size=4, seed=0), options=options)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["options"]["truncation_psi"] == 0.5 and meta["options"]["noise_mode"] == "seeded"
    assert meta["train"]["lr_g"] == 0.002 and meta["train"]["betas"] == [0.0, 0.99]
    loaded = generators.load("stylegan2", checkpoint=path, resolution=32)
    assert loaded.net.truncation_psi == 0.5
    images = loaded.sample([0, 1, 2])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    again = generators.load("stylegan2", checkpoint=path, resolution=32)
    assert np.array_equal(again.sample([1]), images[[1]])
    # Untruncated samples differ: the sidecar's psi is what sampling uses.
    loaded.net.truncation_psi = 1.0
    assert not np.array_equal(render(loaded.net, [0, 1, 2], "cpu"), images)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    path = generators.train("stylegan2", random_photos(8), tmp_path / "g",
                            GeneratorTraining(steps=1, batch_size=4, seed=0), options=TINY)
    with pytest.raises(GeneratorError, match="is for arch 'stylegan2', not 'stylegan'"):
        generators.load("stylegan", checkpoint=path, resolution=32)
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["options"]["ch"] = 4
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="shape mismatches"):
        generators.load("stylegan2", checkpoint=path, resolution=32)
    meta["options"]["n_mlp"] = 3
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="missing keys.*mapping.layers.2"):
        generators.load("stylegan2", checkpoint=path, resolution=32)
