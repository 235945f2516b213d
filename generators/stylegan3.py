"""StyleGAN3-T (Karras et al., "Alias-Free Generative Adversarial Networks", NeurIPS 2021).

Generator, configuration T (translation equivariant), in plain PyTorch:

* mapping network: z normalised by its second moment, 2 fully connected layers with leaky
  ReLU, equalised learning rate with lr multiplier 0.01; a running mean of w (``w_avg``,
  beta 0.998) is tracked in training and used for truncation at sampling time;
* Fourier-feature input: fixed random frequencies inside a disc whose radius is the first
  cutoff, random phases, and an affine layer from w that gives a rotation and translation of
  the feature coordinates (initialised to the identity), followed by a learned channel mix;
* ``num_layers`` (14 published) synthesis layers + toRGB, each a modulated, demodulated 3x3
  conv followed by the alias-free nonlinearity: bias, upsample (2x the layer's higher
  sampling rate, 4x when it doubles) with a Kaiser-windowed sinc low-pass, leaky ReLU,
  low-pass at the output cutoff and downsample. Cutoffs and stopbands follow the paper's
  geometric progression from (2, 2**2.1) to (R/2, R/2 * 2**0.3), reached ``num_critical``
  (2) layers before the end; sampling rates and channel counts derive from them; feature
  maps carry a 10-sample margin that the last two layers crop to R x R. The final toRGB is a
  1x1 modulated conv without demodulation or nonlinearity; output scaled by 0.25. Each
  layer's input is normalised by an EMA of its magnitude (a buffer, tracked in training);
* the low-pass filters are designed with scipy.signal.firwin (Kaiser window, as NVIDIA's
  implementation does) and applied separably, one matrix product per axis.

Discriminator and losses are generators.style_layers' (shared with StyleGAN2): the residual
discriminator (equalised LR, [1,3,3,1] blur before every 2x downsample, residual skips scaled
by sqrt(0.5), minibatch stddev in groups of 4, conv + 2 fully connected layers at 4x4), the
non-saturating logistic loss (fakes and reals in separate D passes) and R1 on reals
(gamma/2 * E||grad D(x)||^2) in its own D step every 16 D updates, scaled by 16, with D's Adam
lr and betas adjusted by mb_ratio 16/17, as NVIDIA's training loop does; no path length
regularisation (NVIDIA's stylegan3 configs turn it off). Optimiser as published: Adam lr 0.0025
(G) / 0.002 (D), betas (0, 0.99), one D update per G update. Samples (and the checkpoint) come
from the generator EMA, G_ema, with the published half-life and ramp-up (see EMA).

Choices that differ from NVIDIA's code, and why:

* Sampling (eval mode) has no cross-sample operation: the pre-normalisation of the styles
  inside the modulated conv is per sample (NVIDIA divides by the RMS over the whole batch;
  demodulation removes any per-sample scale, so the result is the same up to rounding), the
  magnitude EMAs and w_avg are frozen, and truncation (``truncation_psi``) applies in eval
  mode only (training runs at psi = 1, as published). Eval output is clamped to [-1, 1] (the
  same clamp base.to_uint8 applies); training output is unclamped, as published.
* No activation clamp at +-256: NVIDIA's conv_clamp guards float16 overflow, and everything
  here runs in float32 (the clamp cost ~15% of a CPU step here).
* No image blur during the first 200k images and no mixed precision: runs here are short
  and in float32.
* The filters run as per-axis resampling matrices (see FilteredLeakyReLU) rather than
  style_layers.upfirdn2d (a dense 2-D kernel decimated by slicing): with 12-48 taps per axis
  that would cost 6-24x more multiply-adds per output and compute outputs thrown away.

``ch`` is channel_max (512 published); channel_base is 64 * ch (32768 published).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

from generators import style_layers as sl
from generators.base import GeneratorError, parse_dataclass_options
from generators.ema import EmaSetting

NAME = "stylegan3"
RESOLUTIONS = (32, 64, 128)
# Paper/official config: Adam lr 0.0025 for G, 0.002 for D, betas (0, 0.99); one D step per G step.
TRAIN_DEFAULTS = {"lr_g": 0.0025, "lr_d": 0.002, "betas": (0.0, 0.99), "n_dis": 1}
# Samples come from G_ema (generators.ema) as published: NVIDIA's train.py sets
# ema_kimg = batch * 10 / 32, and training_loop's ema_rampup is 0.05.
EMA = EmaSetting(kimg=10.0, reference_batch=32, rampup=0.05)

# Synthesis schedule constants of config T (NVIDIA SynthesisNetwork defaults).
FIRST_CUTOFF = 2.0  # cutoff of the Fourier input, cycles per unit of the feature canvas
FIRST_STOPBAND = 2 ** 2.1
LAST_STOPBAND_REL = 2 ** 0.3  # last stopband = last cutoff (R/2) times this
MARGIN = 10  # samples of margin around the canvas of the non-final layers
OUTPUT_SCALE = 0.25
FILTER_SIZE = 6  # filter taps per unit of up/down factor
LRELU_UPSAMPLING = 2  # how much above the layer's sampling rate the nonlinearity runs
W_AVG_BETA = 0.998
# NVIDIA sets 0.5 ** (batch / 20k images); 0.999 is that value for a batch of ~30.
MAGNITUDE_EMA_BETA = 0.999
MBSTD_GROUP = 4


@dataclasses.dataclass(frozen=True)
class StyleGAN3Options:
    """Architecture and loss hyperparameters stored in a checkpoint's sidecar."""

    ch: int = 512  # channel_max; channel_base is 64 * ch (512 / 32768 published)
    dim_z: int = 512  # latent size
    dim_w: int = 512  # intermediate latent (style) size
    mapping_layers: int = 2  # fully connected layers of the mapping network (2 for StyleGAN3)
    num_layers: int = 14  # synthesis layers before toRGB (14 published); > num_critical
    num_critical: int = 2  # last layers that are critically sampled (cutoff = Nyquist)
    # Sampling-time truncation towards w_avg; 1.0 = none.
    truncation_psi: float = dataclasses.field(default=1.0, metadata={"max": 1.0})
    r1_gamma: float = 0.5  # R1 weight; the paper's FFHQ-U 256 value 2 scaled by (128 / 256)^2
    r1_interval: int = 16  # lazy R1 every this many D updates, as published (1 = every update)


def parse_options(options: Mapping[str, Any] | None) -> StyleGAN3Options:
    """Validated options, defaults filled in; unknown keys and bad values raise naming the key."""
    parsed = parse_dataclass_options(NAME, StyleGAN3Options, options)
    if parsed.num_layers <= parsed.num_critical:
        raise GeneratorError(f"stylegan3 option num_layers={parsed.num_layers} must exceed "
                             f"num_critical={parsed.num_critical}")
    return parsed


def options_dict(options: StyleGAN3Options) -> dict[str, Any]:
    return dataclasses.asdict(options)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"stylegan3 supports resolutions {RESOLUTIONS}, not {resolution}")


# ---------------------------------------------------------------------------------------------
# Filters


def lowpass_filter(numtaps: int, cutoff: float, half_width: float, fs: float) -> torch.Tensor | None:
    """1-D Kaiser-windowed sinc low-pass (unit DC gain), or None when numtaps == 1 (no filter).

    `cutoff` is the nominal -6 dB point (short filters with wide transitions pass more
    there) and the transition band is cutoff +- half_width, so the
    stopband starts at cutoff + half_width; all frequencies in the units of `fs`.
    """
    if numtaps == 1:
        return None
    taps = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=half_width * 2, fs=fs)
    return torch.as_tensor(taps, dtype=torch.float32)


def resample_matrix(length: int, f: torch.Tensor | None, *, up: int = 1, down: int = 1,
                    pad: tuple[int, int] = (0, 0), gain: float = 1.0) -> torch.Tensor:
    """(length, out_length) matrix of 1-D upfirdn: a row vector times it is resampled.

    Upfirdn: insert up - 1 zeros after every sample, pad by `pad` = (before, after) (negative
    crops), convolve with the symmetric taps `f` (None: no filter), keep every down-th sample,
    multiply by `gain`.
    """
    x = torch.eye(length, dtype=torch.float64)
    if up > 1:
        x = F.pad(x.unsqueeze(2), (0, up - 1)).reshape(length, length * up)
    x = F.pad(x, pad)
    if f is not None:
        assert torch.equal(f, f.flip(0)), "correlation equals convolution only for symmetric taps"
        x = F.conv1d(x.unsqueeze(1), f.double().view(1, 1, -1)).squeeze(1)
    return (x[:, ::down] * gain).float()


def resample2d(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a resample_matrix along both spatial axes of a square (N, C, S, S) map."""
    n, c, h, w = x.shape
    out = matrix.shape[1]
    # Rows first as one large product, then columns as a batched one.
    x = (x.reshape(-1, w) @ matrix).view(n * c, h, out)
    return torch.matmul(matrix.t(), x).view(n, c, out, out)


class FilteredLeakyReLU(nn.Module):
    """The alias-free nonlinearity: upsample + low-pass, leaky ReLU, low-pass + downsample.

    Running the pointwise nonlinearity at `up` times the input rate keeps most of the high
    frequencies it creates representable, and the second low-pass removes them before
    decimation, so (almost) nothing folds back below the cutoff (paper, section 3.2).
    The separable filters run as one small matrix product per axis: on CPU that measured
    2.5-4x faster than depthwise convolutions over the zero-stuffed maps.
    """

    def __init__(self, in_size: int, up_filter: torch.Tensor | None, down_filter: torch.Tensor | None,
                 up: int, down: int, pad: tuple[int, int], gain: float = math.sqrt(2),
                 slope: float = 0.2):
        super().__init__()
        # in_size: side of the square input; up_filter/down_filter: 1-D low-pass taps (None:
        # none); up/down: resampling factors; pad: (before, after) padding of each axis after
        # upsampling; gain/slope: leaky ReLU gain and negative slope
        self.in_size, self.gain, self.slope = in_size, gain, slope
        # Zero insertion keeps 1 / up of the energy per axis; a gain of `up` per axis restores DC.
        up_matrix = resample_matrix(in_size, up_filter, up=up, pad=pad, gain=up)
        down_matrix = resample_matrix(up_matrix.shape[1], down_filter, down=down)
        # Derived from the options, so not saved: a checkpoint holds learned state only.
        self.register_buffer("up_matrix", up_matrix, persistent=False)
        self.register_buffer("down_matrix", down_matrix, persistent=False)
        self.out_size = down_matrix.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == (self.in_size, self.in_size), tuple(x.shape)
        x = F.leaky_relu(resample2d(x, self.up_matrix), self.slope) * self.gain
        return resample2d(x, self.down_matrix)


def filtered_lrelu(x: torch.Tensor, up_filter: torch.Tensor | None, down_filter: torch.Tensor | None,
                   up: int, down: int, pad: tuple[int, int], **kwargs: Any) -> torch.Tensor:
    """FilteredLeakyReLU for one square (N, C, S, S) input (builds the matrices each call)."""
    op = FilteredLeakyReLU(x.shape[-1], up_filter, down_filter, up, down, pad, **kwargs)
    return op.to(x.device, x.dtype)(x)


# ---------------------------------------------------------------------------------------------
# Generator


class MappingNetwork(nn.Module):
    """z (N, dim_z) -> w (N, dim_w); tracks the mean w in training for truncation.

    Built from style_layers' equalised linear layers; a class of its own only because
    StyleGAN3 tracks w_avg with beta 0.998 where style_layers.MappingNetwork fixes 0.995.
    """

    def __init__(self, dim_z: int, dim_w: int, num_layers: int, lr_mult: float = 0.01,
                 w_avg_beta: float = W_AVG_BETA):
        super().__init__()
        # dim_z/dim_w: latent sizes; num_layers: FC layers; lr_mult: equalised-LR multiplier;
        # w_avg_beta: EMA decay of the tracked mean w
        sizes = [dim_z] + [dim_w] * num_layers
        self.layers = nn.Sequential(*(sl.EqualLinear(a, b, lr_mul=lr_mult, activation=True)
                                      for a, b in zip(sizes, sizes[1:])))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(dim_w))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        w = self.layers(sl.pixel_norm(z))
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        return sl.truncate(w, self.w_avg, truncation_psi)


class FourierInput(nn.Module):
    """w -> (N, channels, size, size) Fourier features of a canvas sampled at `sampling_rate`.

    Feature c at canvas point p is sin(2 pi (f_c . p' + phi_c)) where p' = R(w) (p - t(w)):
    the affine from w rotates and translates the coordinate frame, so moving t moves the
    (band-limited, continuous) features by exactly t; frequencies near the band edge fade out.
    """

    def __init__(self, dim_w: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        # dim_w: style size; channels: feature count; size: canvas side in samples (margin
        # included); sampling_rate: samples per unit; bandwidth: largest frequency (cycles/unit)
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        # Maps a 2-D Gaussian to a distribution inside the unit disc, denser towards its edge.
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)
        # Rotation (cos, sin) and translation (tx, ty); starts as the identity transform.
        self.affine = sl.EqualLinear(dim_w, 4)
        with torch.no_grad():
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.weight = nn.Parameter(torch.randn(channels, channels))

    def features(self, t: torch.Tensor) -> torch.Tensor:
        """Raw sinusoids (N, size, size, channels) for transform parameters t (N, 4), before mixing."""
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        n = t.shape[0]
        rot = torch.eye(3, device=t.device).repeat(n, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        shift = torch.eye(3, device=t.device).repeat(n, 1, 1)
        shift[:, 0, 2], shift[:, 1, 2] = -t[:, 2], -t[:, 3]
        transform = rot @ shift
        phases = self.phases + (self.freqs @ transform[:, :2, 2:]).squeeze(2)  # (N, C)
        freqs = self.freqs @ transform[:, :2, :2]  # (N, C, 2)
        # Fade out frequencies that the canvas rate cannot carry without aliasing.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        # Sample centres in units: (i + 0.5 - size / 2) / sampling_rate; last axis is (x, y).
        coords = (torch.arange(self.size, device=t.device, dtype=t.dtype) + 0.5 - self.size / 2) \
            / self.sampling_rate
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1)  # (H, W, 2)
        x = torch.einsum("hwk,nck->nhwc", grid, freqs) + phases[:, None, None, :]
        return torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.features(self.affine(w))
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, padding: int,
                     demodulate: bool, input_gain: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample conv with weights scaled by styles (N, in) and, if asked, demodulated.

    Demodulation rescales each output channel's weights to unit L2 norm per sample, which
    replaces AdaIN's instance normalisation with an expected-statistics normalisation.
    """
    n, in_ch = styles.shape
    out_ch, _, kh, kw = weight.shape
    if demodulate:
        # Pre-normalisation for numerical range only (demodulation undoes any scale); per
        # sample so that no image depends on the others in its batch.
        weight = weight * weight.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    w = weight.unsqueeze(0) * styles.view(n, 1, in_ch, 1, 1)  # (N, out, in, kh, kw)
    if demodulate:
        w = w * (w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain
    x = F.conv2d(x.reshape(1, n * in_ch, *x.shape[2:]), w.reshape(n * out_ch, in_ch, kh, kw),
                 padding=padding, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated conv + alias-free leaky ReLU between two sampling rates (or the final toRGB)."""

    def __init__(self, dim_w: int, *, is_torgb: bool, in_ch: int, out_ch: int, in_size: int,
                 out_size: int, in_rate: float, out_rate: float, in_cutoff: float, out_cutoff: float,
                 in_half_width: float, out_half_width: float, kernel: int = 3):
        super().__init__()
        # is_torgb: 1x1 conv, no demodulation, no nonlinearity or filters;
        # in_/out_ch, in_/out_size: channels and canvas sides; in_/out_rate: sampling rates;
        # in_/out_cutoff, in_/out_half_width: filter cutoff and transition half-width;
        # kernel: conv kernel side (3; 1 for toRGB)
        self.is_torgb = is_torgb
        self.in_ch, self.out_ch, self.in_size, self.out_size = in_ch, out_ch, in_size, out_size
        self.in_cutoff, self.out_cutoff = float(in_cutoff), float(out_cutoff)
        self.kernel = 1 if is_torgb else kernel
        self.affine = sl.EqualLinear(dim_w, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, self.kernel, self.kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("magnitude_ema", torch.ones(()))

        tmp_rate = max(in_rate, out_rate) * (1 if is_torgb else LRELU_UPSAMPLING)
        self.tmp_rate = tmp_rate
        self.up = int(round(tmp_rate / in_rate))
        self.down = int(round(tmp_rate / out_rate))
        up_taps = FILTER_SIZE * self.up if self.up > 1 and not is_torgb else 1
        down_taps = FILTER_SIZE * self.down if self.down > 1 and not is_torgb else 1
        filters = {}
        for name, taps, cutoff, half in (("up_filter", up_taps, in_cutoff, in_half_width),
                                         ("down_filter", down_taps, out_cutoff, out_half_width)):
            filters[name] = lowpass_filter(taps, cutoff, half, tmp_rate)
            # Derived from the options, so not saved: a checkpoint holds learned state only.
            self.register_buffer(name, filters[name], persistent=False)
        # Padding (after upsampling) that turns the full conv output into exactly out_size.
        pad_total = (out_size - 1) * self.down + 1
        pad_total -= (in_size + self.kernel - 1) * self.up
        pad_total += up_taps + down_taps - 2
        lo = (pad_total + self.up) // 2
        self.nonlinearity = None if is_torgb else FilteredLeakyReLU(
            in_size + self.kernel - 1, filters["up_filter"], filters["down_filter"], self.up, self.down,
            (lo, pad_total - lo))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (self.in_ch, self.in_size, self.in_size), tuple(x.shape)
        if self.training:
            with torch.no_grad():
                self.magnitude_ema.copy_(x.detach().square().mean().lerp(self.magnitude_ema,
                                                                          MAGNITUDE_EMA_BETA))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles / math.sqrt(self.in_ch * self.kernel ** 2)
        x = modulated_conv2d(x, self.weight, styles, padding=self.kernel - 1,
                             demodulate=not self.is_torgb, input_gain=self.magnitude_ema.rsqrt())
        x = x + self.bias.view(1, -1, 1, 1)
        if self.nonlinearity is not None:
            x = self.nonlinearity(x)
        assert x.shape[1:] == (self.out_ch, self.out_size, self.out_size), tuple(x.shape)
        return x


@dataclasses.dataclass(frozen=True)
class LayerSchedule:
    """Per-layer filter and canvas plan; index 0 is the Fourier input, index num_layers toRGB."""

    cutoffs: np.ndarray
    stopbands: np.ndarray
    sampling_rates: np.ndarray
    half_widths: np.ndarray
    sizes: np.ndarray
    channels: np.ndarray


def layer_schedule(resolution: int, ch: int, num_layers: int, num_critical: int) -> LayerSchedule:
    """Cutoffs and stopbands grow geometrically from the first to the last value, reached
    num_critical layers before the end; sampling rates are the smallest powers of two above
    twice the stopband (at most the resolution); widths shrink as cutoffs grow."""
    last_cutoff = resolution / 2
    last_stopband = last_cutoff * LAST_STOPBAND_REL
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = FIRST_CUTOFF * (last_cutoff / FIRST_CUTOFF) ** exponents
    stopbands = FIRST_STOPBAND * (last_stopband / FIRST_STOPBAND) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + MARGIN * 2
    sizes[-2:] = resolution
    channels = np.rint(np.minimum(64 * ch / 2 / cutoffs, ch))
    if channels.min() < 1:
        raise GeneratorError(f"stylegan3 option ch={ch} is too small for {resolution} px "
                             f"(the last layers would have no channels)")
    channels[-1] = 3
    return LayerSchedule(cutoffs, stopbands, rates, half_widths, sizes.astype(int), channels.astype(int))


class SynthesisNetwork(nn.Module):
    """w (N, dim_w) -> image (N, 3, R, R), unbounded (about [-1, 1])."""

    def __init__(self, resolution: int, ch: int, dim_w: int, num_layers: int, num_critical: int):
        super().__init__()
        s = layer_schedule(resolution, ch, num_layers, num_critical)
        self.schedule = s
        self.input = FourierInput(dim_w, int(s.channels[0]), int(s.sizes[0]), float(s.sampling_rates[0]),
                                  float(s.cutoffs[0]))
        layers = []
        for i in range(num_layers + 1):
            p = max(i - 1, 0)
            layers.append(SynthesisLayer(
                dim_w, is_torgb=i == num_layers, in_ch=int(s.channels[p]), out_ch=int(s.channels[i]),
                in_size=int(s.sizes[p]), out_size=int(s.sizes[i]), in_rate=float(s.sampling_rates[p]),
                out_rate=float(s.sampling_rates[i]), in_cutoff=float(s.cutoffs[p]),
                out_cutoff=float(s.cutoffs[i]), in_half_width=float(s.half_widths[p]),
                out_half_width=float(s.half_widths[i])))
        self.layers = nn.ModuleList(layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        x = self.input(w)
        # Without style mixing (StyleGAN3 trains without it) every layer gets the same w.
        for layer in self.layers:
            x = layer(x, w)
        return x * OUTPUT_SCALE


class StyleGAN3Generator(nn.Module):
    """z (N, dim_z) -> image (N, 3, resolution, resolution); clamped to [-1, 1] in eval mode."""

    def __init__(self, resolution: int, options: StyleGAN3Options):
        super().__init__()
        _check_resolution(resolution)
        self.resolution = resolution  # output side
        self.dim_z = options.dim_z  # latent size
        self.truncation_psi = options.truncation_psi  # applied in eval mode only
        self.mapping = MappingNetwork(options.dim_z, options.dim_w, options.mapping_layers)
        self.synthesis = SynthesisNetwork(resolution, options.ch, options.dim_w, options.num_layers,
                                          options.num_critical)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        w = self.mapping(z, truncation_psi=1.0 if self.training else self.truncation_psi)
        x = self.synthesis(w)
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        return x if self.training else x.clamp(-1, 1)


def build_generator(resolution: int, options: StyleGAN3Options) -> StyleGAN3Generator:
    return StyleGAN3Generator(resolution, options)


def build_discriminator(resolution: int, options: StyleGAN3Options) -> sl.StyleDiscriminator:
    """StyleGAN2's residual discriminator, NVIDIA's channel_base 32768 (multiplier 2) scaled by ch."""
    _check_resolution(resolution)
    widths = sl.layer_widths(resolution, options.ch, 2)
    return sl.StyleDiscriminator(resolution, widths, residual=True, taps=(1, 3, 3, 1),
                                 r1_gamma=options.r1_gamma, r1_interval=options.r1_interval,
                                 mbstd_group=MBSTD_GROUP)


# Non-saturating logistic loss; R1 on reals in its own D step every r1_interval D updates (no path
# length regularisation: NVIDIA's stylegan3 configs set pl_weight 0 and no G_reg_interval).
discriminator_loss = sl.discriminator_loss
generator_loss = sl.generator_loss
lazy_regularizers = sl.lazy_regularizers
