"""StyleGAN3-T: schedule, Kaiser filters, Fourier input, alias-free nonlinearity, R1, sampling and training."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators
from generators.training import GeneratorTraining
from generators import stylegan3
from generators.base import GeneratorError, NetworkGenerator, isolated_rng
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS

TINY = TINY_OPTIONS["stylegan3"]


def tiny_net(resolution: int = 32, **options) -> stylegan3.StyleGAN3Generator:
    with isolated_rng(0):
        return stylegan3.build_generator(resolution, stylegan3.parse_options({**TINY, **options}))


def random_images(n: int = 8, resolution: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


# --- options and schedule ---------------------------------------------------------------------

def test_options_defaults_and_errors():
    opts = stylegan3.parse_options(None)
    assert (opts.ch, opts.dim_z, opts.dim_w, opts.mapping_layers, opts.num_layers) == (512, 512, 512, 2, 14)
    assert opts.truncation_psi == 1.0
    assert stylegan3.parse_options({"truncation_psi": 1}).truncation_psi == 1.0
    with pytest.raises(GeneratorError, match="unknown stylegan3 options"):
        stylegan3.parse_options({"width": 3})
    with pytest.raises(GeneratorError, match="ch=0"):
        stylegan3.parse_options({"ch": 0})
    with pytest.raises(GeneratorError, match="num_layers"):
        stylegan3.parse_options({"num_layers": 2})
    with pytest.raises(GeneratorError, match="truncation_psi"):
        stylegan3.parse_options({"truncation_psi": "0.7"})
    with pytest.raises(GeneratorError, match="truncation_psi"):
        stylegan3.parse_options({"truncation_psi": 1.5})
    with pytest.raises(GeneratorError, match="r1_gamma"):
        stylegan3.parse_options({"r1_gamma": -1})
    with pytest.raises(GeneratorError, match="resolutions"):
        stylegan3.build_generator(48, stylegan3.parse_options(TINY))
    with pytest.raises(GeneratorError, match="ch=1 is too small"):
        stylegan3.build_generator(128, stylegan3.parse_options({**TINY, "ch": 1}))
    assert stylegan3.parse_options(stylegan3.options_dict(opts)) == opts


def test_published_schedule_at_128():
    s = stylegan3.layer_schedule(128, 512, 14, 2)
    # Cutoffs grow geometrically from 2 to R/2, reached num_critical layers before toRGB.
    assert s.cutoffs[0] == 2 and np.allclose(s.cutoffs[12:], 64)
    ratios = s.cutoffs[1:13] / s.cutoffs[:12]
    assert np.allclose(ratios, ratios[0]) and ratios[0] > 1
    assert np.isclose(s.stopbands[0], 2 ** 2.1) and np.allclose(s.stopbands[12:], 64 * 2 ** 0.3)
    # Sampling rates: powers of two covering twice the stopband, capped at the resolution.
    assert np.all(np.log2(s.sampling_rates) % 1 == 0)
    assert np.all(s.sampling_rates >= np.minimum(2 * s.stopbands, 128))
    assert list(s.sizes[-2:]) == [128, 128] and np.all(s.sizes[:-2] == s.sampling_rates[:-2] + 20)
    # Critically sampled last layers: cutoff at Nyquist.
    assert np.allclose(s.cutoffs[-2:], s.sampling_rates[-2:] / 2)
    assert s.channels[0] == 512 and s.channels[-1] == 3 and s.channels[-2] == 256


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_network_shapes_and_range(resolution):
    opts = stylegan3.parse_options(TINY)
    with isolated_rng(0):
        g = stylegan3.build_generator(resolution, opts).eval()
        d = stylegan3.build_discriminator(resolution, opts)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, 3, resolution, resolution) and x.dtype == torch.float32
    assert x.abs().max() <= 1 and x.std() > 0
    assert d(x).shape == (2,)
    assert len(g.synthesis.layers) == 4 and g.synthesis.layers[-1].is_torgb
    with pytest.raises(AssertionError):
        g(torch.randn(2, 7))


# --- Kaiser low-pass filters --------------------------------------------------------------------

def test_kaiser_filters_unit_dc_gain_and_stopband_attenuation():
    g = tiny_net(128, num_layers=14)
    s = g.synthesis.schedule
    checked = 0
    for i, layer in enumerate(g.synthesis.layers[:-1]):
        p = max(i - 1, 0)
        for f, cutoff, half in ((layer.up_filter, s.cutoffs[p], s.half_widths[p]),
                                (layer.down_filter, s.cutoffs[i], s.half_widths[i])):
            taps = f.double().numpy()
            assert np.allclose(taps, taps[::-1])  # linear phase
            freqs = np.fft.rfftfreq(8192, 1 / layer.tmp_rate)
            response = np.abs(np.fft.rfft(taps, 8192))
            assert response[0] == pytest.approx(1, abs=1e-6)
            # A low-pass: the band well below the cutoff passes, the cutoff is in the transition.
            assert response[freqs <= cutoff / 2].min() > 0.85
            assert 0.4 < np.interp(cutoff, freqs, response) < 0.8
            # Above the stopband, the attenuation Kaiser's design formula predicts, within 6 dB
            # (the formula is an empirical fit; measured here it is off by up to ~5.5 dB).
            width = 2 * half / (layer.tmp_rate / 2)
            atten_db = 2.285 * (len(taps) - 1) * math.pi * width + 7.95
            stop = response[freqs >= cutoff + half]
            assert stop.max() <= 10 ** (-(atten_db - 6) / 20), (i, cutoff, half)
            checked += 1
    assert checked == 28
    # The early (wide-transition) layers reject their stopband by over 60 dB.
    first = np.abs(np.fft.rfft(g.synthesis.layers[0].up_filter.double().numpy(), 8192))
    assert first[np.fft.rfftfreq(8192, 1 / 32) >= 8].max() < 10 ** (-60 / 20)
    assert stylegan3.lowpass_filter(1, 4, 2, 32) is None


# --- Fourier features ---------------------------------------------------------------------------

def _fourier_input() -> stylegan3.FourierInput:
    with isolated_rng(3):
        return stylegan3.FourierInput(dim_w=8, channels=16, size=24, sampling_rate=16, bandwidth=2)


def test_fourier_input_translation_shifts_features_as_predicted():
    inp = _fourier_input()
    rate = inp.sampling_rate
    identity = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    base = inp.features(identity)
    # Translating by 3 samples along x and 2 along y moves the features by exactly that.
    moved = inp.features(torch.tensor([[1.0, 0.0, 3 / rate, 2 / rate]]))
    assert torch.allclose(moved[:, 2:, 3:], base[:, :-2, :-3], atol=1e-5)
    assert not torch.allclose(moved, base, atol=1e-2)
    # A sub-sample shift evaluates the same continuous sinusoids between the old samples.
    tx, ty = 0.37 / rate, -0.81 / rate
    shifted = inp.features(torch.tensor([[1.0, 0.0, tx, ty]]))[0].double()
    coords = (np.arange(24) + 0.5 - 12) / rate
    px, py = np.meshgrid(coords - tx, coords - ty, indexing="xy")
    f, phi = inp.freqs.double().numpy(), inp.phases.double().numpy()
    amp = np.clip(1 - (np.linalg.norm(f, axis=1) - 2) / (rate / 2 - 2), 0, 1)
    expected = amp * np.sin(2 * np.pi * (px[..., None] * f[:, 0] + py[..., None] * f[:, 1] + phi))
    assert np.allclose(shifted.numpy(), expected, atol=1e-5)
    # All frequencies lie inside the band, so the features are band-limited.
    assert inp.freqs.norm(dim=1).max() <= inp.bandwidth


def test_fourier_affine_from_w_translates_the_output():
    inp = _fourier_input()
    w = torch.randn(2, 8)
    with torch.no_grad():
        inp.affine.weight.zero_()
        before = inp(w)
        inp.affine.bias.copy_(torch.tensor([1.0, 0.0, 4 / inp.sampling_rate, 0.0]))
        after = inp(w)
    assert after.shape == (2, 16, 24, 24)
    assert torch.allclose(after[..., 4:], before[..., :-4], atol=1e-5)
    # At initialisation the affine is the identity transform whatever w is.
    fresh = _fourier_input()
    assert torch.allclose(fresh(w)[0], fresh(torch.zeros(1, 8))[0], atol=1e-6)


def test_translating_the_input_translates_the_image():
    """Config T's defining property (the paper's EQ-T): moving the Fourier input by whole output
    pixels moves the image by the same amount, through all synthesis layers."""
    g = tiny_net(32, ch=8).eval()
    z = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))

    def render(tx: float, ty: float) -> torch.Tensor:
        with torch.no_grad():
            g.synthesis.input.affine.bias.copy_(torch.tensor([1.0, 0.0, tx, ty]))
            return g(z)

    base = render(0, 0)
    for k in (1, 3):
        moved = render(k / 32, -k / 32)  # +k pixels along x, -k along y
        snr = lambda err: 10 * torch.log10(base.var() / err.square().mean()).item()
        assert snr(moved[..., :-k, k:] - base[..., k:, :-k]) > 40
        assert snr(moved - base) < 20  # the images did move


# --- alias-free nonlinearity --------------------------------------------------------------------

def _band_limited_periodic(n: int, rate: float, band: float, seed: int) -> np.ndarray:
    """Sum of sinusoids below `band` whose frequencies fit n samples exactly (periodic image)."""
    rng = np.random.default_rng(seed)
    coords = np.arange(n) / rate
    x, y = np.meshgrid(coords, coords, indexing="xy")
    img = np.full((n, n), 0.3)
    step = rate / n
    for _ in range(6):
        fx, fy = np.round(rng.uniform(-band, band, 2) / step) * step
        img += rng.uniform(0.3, 1) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    return img


def _energy_above(img: np.ndarray, rate: float, threshold: float) -> float:
    """Share of non-DC energy at frequencies whose larger axis component exceeds threshold."""
    power = np.abs(np.fft.fft2(img)) ** 2
    power[0, 0] = 0
    f = np.abs(np.fft.fftfreq(img.shape[0], 1 / rate))
    return float(power[np.maximum(f[None, :], f[:, None]) > threshold].sum() / power.sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_filtered_lrelu_creates_little_energy_above_the_cutoff(seed):
    rate, cutoff, half, n, margin = 32, 4.0, 4.0, 64, 16
    img = _band_limited_periodic(n, rate, cutoff - 1, seed)
    assert _energy_above(img, rate, cutoff) < 1e-12  # the input is band-limited
    x = F.pad(torch.tensor(img, dtype=torch.float32)[None, None], (margin,) * 4, mode="circular")
    fu = stylegan3.lowpass_filter(12, cutoff, half, 2 * rate)
    fd = stylegan3.lowpass_filter(12, cutoff, half, 2 * rate)
    # Same-size padding, from the synthesis layer's formula with a 1x1 kernel.
    size = x.shape[-1]
    pad_total = (size - 1) * 2 + 1 - size * 2 + 22
    lo = (pad_total + 2) // 2
    y = stylegan3.filtered_lrelu(x, fu, fd, 2, 2, (lo, pad_total - lo))
    assert y.shape == x.shape
    filtered = y[0, 0, margin:margin + n, margin:margin + n].double().numpy()
    naive = (F.leaky_relu(torch.tensor(img), 0.2) * math.sqrt(2)).numpy()
    naive_above, filtered_above = _energy_above(naive, rate, cutoff), _energy_above(filtered, rate, cutoff)
    assert naive_above > 0.01  # the pointwise nonlinearity does create high frequencies...
    assert filtered_above < 0.2 * naive_above  # ...which the alias-free version mostly removes
    stop = cutoff + half - 1e-9
    assert _energy_above(filtered, rate, stop) < 1e-3 * _energy_above(naive, rate, stop)


def test_filtered_lrelu_keeps_a_constant_and_its_gain():
    f = stylegan3.lowpass_filter(12, 4, 4, 64)
    x = torch.full((1, 2, 40, 40), 0.5)
    x[:, 1] = -0.5
    y = stylegan3.filtered_lrelu(x, f, f, 2, 2, (11, 10))
    inner = y[..., 8:-8, 8:-8]
    assert torch.allclose(inner[:, 0], torch.tensor(0.5 * math.sqrt(2)), atol=1e-5)
    assert torch.allclose(inner[:, 1], torch.tensor(-0.1 * math.sqrt(2)), atol=1e-5)


# --- modulation ---------------------------------------------------------------------------------

def test_demodulation_normalises_weights():
    torch.manual_seed(0)
    weight = torch.randn(8, 16, 3, 3)
    styles = torch.rand(2, 16) * 3 + 0.1
    x = torch.randn(2, 16, 96, 96)
    out = stylegan3.modulated_conv2d(x, weight, styles, padding=1, demodulate=True)
    # Unit-norm effective weights keep unit-variance inputs at unit variance...
    assert torch.allclose(out.var(dim=(2, 3)), torch.ones(2, 8), atol=0.1)
    # ...whatever the scale of each sample's style.
    scaled = stylegan3.modulated_conv2d(x, weight, styles * torch.tensor([[5.0], [0.2]]), padding=1,
                                        demodulate=True)
    assert torch.allclose(scaled, out, atol=1e-4)
    plain = stylegan3.modulated_conv2d(x, weight, styles * 2, padding=1, demodulate=False)
    assert torch.allclose(plain, 2 * stylegan3.modulated_conv2d(x, weight, styles, padding=1,
                                                                demodulate=False), atol=1e-4)


def test_mapping_uses_lr_multiplier_and_tracks_w_avg():
    g = tiny_net()
    first = g.mapping.layers[0]
    assert first.scale == pytest.approx(0.01 / math.sqrt(8))
    assert first.weight.std() > 20  # raw weights are N(0, 1) / lr_mult
    g.train()
    assert torch.equal(g.mapping.w_avg, torch.zeros(8))
    g(torch.randn(4, 8))
    trained_avg = g.mapping.w_avg.clone()
    assert trained_avg.abs().sum() > 0
    assert all(layer.magnitude_ema != 1 for layer in g.synthesis.layers)
    g.eval()
    g(torch.randn(4, 8))
    assert torch.equal(g.mapping.w_avg, trained_avg)  # eval never updates buffers


def test_truncation_pulls_w_towards_the_average():
    g = tiny_net(truncation_psi=0.0)
    g.train()
    g(torch.randn(8, 8))
    g.eval()
    out = g(torch.randn(3, 8))
    assert torch.allclose(out[0], out[1], atol=1e-6) and torch.allclose(out[0], out[2], atol=1e-6)
    z = torch.randn(3, 8)
    w = g.mapping(z)
    assert torch.allclose(g.mapping(z, truncation_psi=0.5), g.mapping.w_avg + 0.5 * (w - g.mapping.w_avg))
    # Training ignores psi (the paper trains at psi = 1).
    g.train()
    varied = g(torch.randn(3, 8))
    assert not torch.allclose(varied[0], varied[1], atol=1e-3)


# --- determinism and checkpoints ----------------------------------------------------------------

def test_eval_sample_depends_on_its_own_latent_only():
    g = tiny_net().eval()
    z = torch.randn(6, 8)
    other = z.clone()
    other[1:] = torch.randn(5, 8) * 3
    assert torch.equal(g(z)[0], g(other)[0])
    gen = NetworkGenerator("stylegan3", g, 32, "")
    many = gen.sample([4, 5, 6])
    assert np.array_equal(gen.sample([5])[0], many[1])
    assert many.dtype == np.uint8 and many.shape == (3, 32, 32, 3)
    assert not np.array_equal(many[0], many[1])


def test_checkpoint_round_trip_and_mismatches(tmp_path):
    options = {**TINY, "truncation_psi": 0.7}
    path = generators.train("stylegan3", random_images(), tmp_path / "g",
                            GeneratorTraining(steps=2, batch_size=4, seed=0), options=options)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["options"]["truncation_psi"] == 0.7 and sidecar["options"]["num_layers"] == 3
    train = sidecar["train"]
    assert (train["lr_g"], train["lr_d"], train["betas"], train["n_dis"]) == (0.0025, 0.002, [0.0, 0.99], 1)
    gen = generators.load("stylegan3", checkpoint=path, resolution=32)
    first = gen.sample([0, 1, 2])
    again = generators.load("stylegan3", checkpoint=path, resolution=32).sample([2, 1, 0])
    assert np.array_equal(first, again[::-1])
    # The tracked mean w and magnitude EMAs travel with the weights.
    assert gen.net.mapping.w_avg.abs().sum() > 0
    # Sidecar options that do not fit the weights, and the wrong arch, are clear errors.
    sidecar["options"]["num_layers"] = 4
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(GeneratorError, match="does not fit"):
        generators.load("stylegan3", checkpoint=path, resolution=32)
    with pytest.raises(GeneratorError, match="is for arch 'stylegan3'"):
        generators.load("sngan", checkpoint=path, resolution=32)


def test_training_steps_change_weights_with_finite_losses():
    opts = stylegan3.parse_options(TINY)
    with isolated_rng(1):
        before = stylegan3.build_generator(32, opts).state_dict()
    seen = []
    result = fit(stylegan3, random_images(), resolve_config(stylegan3, steps=3, batch_size=4, seed=1),
                 opts, on_step=lambda stats, gen: seen.append(stats))
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    for key in ("mapping.layers.0.weight", "synthesis.input.weight", "synthesis.layers.0.weight",
                "synthesis.layers.3.weight", "mapping.w_avg", "synthesis.layers.1.magnitude_ema"):
        assert key in changed, key
    # The Fourier frequencies and phases are fixed, not learned.
    assert torch.equal(before["synthesis.input.freqs"], after["synthesis.input.freqs"])


# --- discriminator and losses -------------------------------------------------------------------

def test_r1_penalty_is_the_real_gradient_norm():
    opts = stylegan3.parse_options({**TINY, "r1_gamma": 3.0, "r1_interval": 1})
    with isolated_rng(0):
        disc = stylegan3.build_discriminator(32, opts).double()
    assert (disc.r1_gamma, disc.r1_interval) == (3.0, 1)
    assert stylegan3.build_discriminator(32, stylegan3.parse_options(TINY)).r1_interval == 16
    # Fixed inputs: a finite difference that straddles a leaky-ReLU kink misses by more than
    # rel 1e-6, and unseeded draws hit one now and then.
    draws = torch.Generator().manual_seed(0)
    real = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=draws)
    fake = torch.randn(4, 3, 32, 32, dtype=torch.float64, generator=draws)
    loss = stylegan3.discriminator_loss(disc, real, fake)
    # Direct computation: the Jacobian of all logits w.r.t. the whole real batch.
    jac = torch.autograd.functional.jacobian(disc, real)  # (4, 4, 3, 32, 32)
    grad = jac.sum(dim=0)
    with torch.no_grad():
        logistic = F.softplus(disc(fake)).mean() + F.softplus(-disc(real)).mean()
        expected = logistic + 3.0 / 2 * grad.square().sum(dim=(1, 2, 3)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)
    assert (loss - logistic).item() > 1e-6
    # And that gradient is the true one: a central finite difference along a random direction.
    v = torch.randn(real.shape, dtype=real.dtype, generator=draws)
    eps = 1e-5
    with torch.no_grad():
        fd = (disc(real + eps * v).sum() - disc(real - eps * v).sum()) / (2 * eps)
    assert fd.item() == pytest.approx((grad * v).sum().item(), rel=1e-6)
    # The penalty is differentiated into D's parameters (gamma changes D's gradients).
    loss.backward()
    with_r1 = disc.out.weight.grad.clone()
    disc.zero_grad()
    disc.r1_gamma = 0.0
    stylegan3.discriminator_loss(disc, real, fake).backward()
    assert not torch.allclose(with_r1, disc.out.weight.grad)


def test_generator_loss_is_non_saturating():
    with isolated_rng(0):
        disc = stylegan3.build_discriminator(32, stylegan3.parse_options(TINY))
    fake = torch.randn(4, 3, 32, 32, requires_grad=True)
    loss = stylegan3.generator_loss(disc, fake, fake.detach())
    assert torch.allclose(loss, F.softplus(-disc(fake)).mean())
    loss.backward()
    assert fake.grad.abs().sum() > 0
