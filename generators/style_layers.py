"""Building blocks shared by StyleGAN (generators.stylegan) and StyleGAN2 (generators.stylegan2).

Everything here is plain PyTorch (no compiled CUDA ops), so it runs wherever torch does:

* equalized learning rate (Karras et al., ICLR 2018): weights are stored as N(0, 1) / lr_mul and
  scaled by lr_mul / sqrt(fan_in) at run time; the mapping network uses lr_mul = 0.01;
* the mapping network z -> w (pixel norm of z, then leaky-ReLU equalized linear layers) and the
  tracked average w (`w_avg`, an EMA with beta 0.995 updated in training) used for truncation;
* FIR filtering (`upfirdn2d`, the [1, 3, 3, 1] / [1, 2, 1] blur around up- and downsampling);
* noise injection: random per-sample noise in training; in eval, per option `noise_mode`,
  either noise drawn from each image's own seed ("seeded", the default) or the layer's stored
  constant map ("const", NVIDIA's noise_mode='const'), so an eval-mode image is a function of
  its seed only (see StyleGenerator.noise_maps);
* the StyleGAN discriminator (ProGAN's layout with minibatch stddev; StyleGAN's plain blocks with
  blur, conv and average-pool downsampling, or StyleGAN2's residual ones with blurred strided convs);
* the non-saturating logistic loss with the R1 penalty on reals, in every D update or lazily
  in its own step (lazy_regularizers).

Parameter shapes and scalings follow the public StyleGAN2 PyTorch port by rosinality
(stylegan2-pytorch, model.py), so its generator checkpoints map onto ours key by key
(generators.external); the code is our own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from generators.base import GeneratorError, LazyRegularizer

# NVIDIA's w_avg tracking: w_avg <- lerp(mean(w), w_avg, beta) every training forward pass.
W_AVG_BETA = 0.995
# Leaky ReLU slope and the gain that restores unit variance after it (both papers' "lrelu").
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)
# Eval-mode noise: "seeded" draws each image's maps from its seed, "const" uses the stored maps.
NOISE_MODES = ("seeded", "const")
# Mixed into the per-image noise seed, so the noise stream of seed s is never the latent's
# (which is torch.Generator().manual_seed(s)); bump the version to change every image.
NOISE_PURPOSE = b"attribution88/style-noise/1"


def layer_widths(resolution: int, ch: int, channel_multiplier: int) -> dict[int, int]:
    """Feature-map width at each resolution 4..`resolution`: min(ch, ch * 32 * multiplier / res).

    With ch=512 this is NVIDIA's min(channel_base / res, 512), channel_base = 16384 * multiplier
    (StyleGAN: multiplier 1; StyleGAN2 config-f and rosinality's default: 2).
    """
    widths = {}
    res = 4
    while res <= resolution:
        widths[res] = min(ch, ch * 32 * channel_multiplier // res)
        if widths[res] < 1:
            raise GeneratorError(f"option ch={ch} is too small for {resolution} px "
                                 f"(width at {res} px would be 0)")
        res *= 2
    return widths


def check_power_of_two(name: str, resolution: int, supported: Sequence[int]) -> int:
    """log2(resolution), after checking it is one the family supports."""
    if resolution not in supported:
        raise GeneratorError(f"{name} supports resolutions {tuple(supported)}, not {resolution}")
    return int(math.log2(resolution))


# --- filtering --------------------------------------------------------------------------------

def blur_kernel(taps: Sequence[int], gain: float = 1.0) -> torch.Tensor:
    """Separable 2D FIR kernel from 1D taps, normalised to sum `gain`."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    k = torch.outer(k, k)
    return k * (gain / k.sum())


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops), filter depthwise, then keep every down-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # Correlation with the flipped kernel is convolution; the kernels used here are symmetric anyway.
    weight = torch.flip(kernel, [0, 1]).to(x)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


class Blur(nn.Module):
    """Fixed FIR filter with given padding (the kernel is a constant, not a checkpoint entry)."""

    def __init__(self, taps: Sequence[int], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        # taps: 1D filter taps; pad: (before, after) padding of each spatial axis; gain: kernel sum
        self.register_buffer("kernel", blur_kernel(taps, gain), persistent=False)
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x upsampling by zero insertion and FIR filtering (StyleGAN2's skip-image upsampler)."""

    def __init__(self, taps: Sequence[int]):
        super().__init__()
        # taps: 1D filter taps; the kernel sums to 4 to keep the mean after zero insertion
        self.register_buffer("kernel", blur_kernel(taps, 4.0), persistent=False)
        p = len(taps) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


def lrelu(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Bias (per channel, dim 1), leaky ReLU 0.2, gain sqrt(2): NVIDIA's bias_act 'lrelu'."""
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


# --- equalized learning-rate layers ----------------------------------------------------------

class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate and an optional fused leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False):
        super().__init__()
        # in_dim/out_dim: feature sizes; bias_init: initial bias (1 for style affines, so styles
        # start at identity); lr_mul: learning-rate multiplier (0.01 in the mapping network);
        # activation: apply lrelu after the bias
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if self.activation:
            return lrelu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """Conv with equalized learning rate; optional blur + stride-2 downsampling and fused lrelu."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, bias: bool = True,
                 activation: bool = True, down: bool = False, taps: Sequence[int] = (1, 3, 3, 1)):
        super().__init__()
        # in_ch/out_ch: channels; kernel: square kernel size; bias: learn a per-channel bias;
        # activation: apply lrelu; down: blur then convolve with stride 2 (halves the size);
        # taps: the blur filter used before downsampling
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1 / math.sqrt(in_ch * kernel * kernel)
        self.activation = activation
        self.down = down
        if down:
            p = len(taps) - 2 + kernel - 1
            self.blur = Blur(taps, ((p + 1) // 2, p // 2))
            self.padding = 0
        else:
            self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = self.blur(x)
        x = F.conv2d(x, self.weight * self.scale, stride=2 if self.down else 1, padding=self.padding)
        if self.activation:
            return lrelu(x, self.bias)
        return x if self.bias is None else x + self.bias.view(1, -1, 1, 1)


# --- mapping network and truncation ------------------------------------------------------------

def pixel_norm(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each latent to unit mean square (both papers normalise z before mapping)."""
    return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """z (N, dim_z) -> w (N, w_dim): pixel norm, then `n_layers` lrelu equalized linear layers.

    In training mode every call also moves `w_avg` towards the batch mean of w (EMA, beta
    0.995), the centre that truncation pulls towards.
    """

    def __init__(self, dim_z: int, w_dim: int, n_layers: int, lr_mul: float = 0.01):
        super().__init__()
        # dim_z: latent size; w_dim: intermediate latent size; n_layers: depth (8 published);
        # lr_mul: learning-rate multiplier of every layer (0.01 published)
        dims = [dim_z] + [w_dim] * n_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul, activation=True)
                                    for a, b in zip(dims, dims[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, update_avg: bool = True) -> torch.Tensor:
        # update_avg: False for the second latent of style mixing, as in NVIDIA's code
        w = pixel_norm(z)
        for layer in self.layers:
            w = layer(w)
        if self.training and update_avg:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, W_AVG_BETA))
        return w


def truncate(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick: w_avg + psi * (w - w_avg); psi=1 is the identity, psi=0 gives w_avg."""
    if psi == 1.0:
        return w
    return w_avg.to(w).lerp(w, psi)


def broadcast_styles(w: torch.Tensor, num_ws: int, *, mixing_prob: float, mapping: nn.Module,
                     rng: torch.Generator | None) -> torch.Tensor:
    """(N, w_dim) -> (N, num_ws, w_dim); in training, with probability `mixing_prob`, the layers
    from a random cutoff on take the w of a second latent (style mixing regularisation)."""
    ws = w.unsqueeze(1).repeat(1, num_ws, 1)
    if rng is None or mixing_prob <= 0 or num_ws < 2:
        return ws
    if torch.rand((), generator=rng).item() >= mixing_prob:
        return ws
    cutoff = int(torch.randint(1, num_ws, (), generator=rng))
    z2 = torch.randn(w.shape[0], mapping.layers[0].weight.shape[1], generator=rng).to(w)
    ws[:, cutoff:] = mapping(z2, update_avg=False).unsqueeze(1)
    return ws


class StyleGenerator(nn.Module):
    """z -> w -> (truncation, style mixing) -> synthesis: what StyleGAN and StyleGAN2 share.

    The constructor sets up the mapping network and returns the per-resolution widths;
    subclasses then build their synthesis layers (`layers`, each with a NoiseInjection `noise`),
    set num_ws and rng, and define synthesis(ws, noise) for ws of shape (N, num_ws, dim_w) and
    noise None or one (N, 1, r, r) map per layer.
    """

    def __init__(self, name: str, resolution: int, resolutions: Sequence[int], options: Any,
                 channel_multiplier: int):
        super().__init__()
        self.log2 = check_power_of_two(name, resolution, resolutions)  # synthesis runs 4 .. 2**log2
        self.resolution = resolution  # output side
        self.dim_z = options.dim_z  # latent size (w has the same size)
        self.truncation_psi = options.truncation_psi  # applied in eval mode only
        self.mixing_prob = options.mixing_prob  # style mixing probability in training
        self.noise_mode = options.noise_mode  # eval-mode noise: one of NOISE_MODES
        self.widths = layer_widths(resolution, options.ch, channel_multiplier)  # feature maps per resolution
        self.mapping = MappingNetwork(options.dim_z, options.dim_z, options.n_mlp)

    # generators.base.render passes each latent's seed (forward's `seeds`): seeded eval noise needs it.
    takes_seeds = True

    def noise_key(self) -> bytes:
        """sha256 of the layers' stored noise maps: this model's share of every noise seed.

        The stored maps are random at construction (as NVIDIA's noise_const), so two models
        draw different noise for the same image seed, and a checkpoint always the same.
        """
        h = hashlib.sha256(NOISE_PURPOSE)
        for layer in self.layers:
            h.update(layer.noise.const.detach().float().cpu().contiguous().numpy().tobytes())
        return h.digest()

    def noise_maps(self, seeds: Sequence[int]) -> list[torch.Tensor]:
        """Per layer, (len(seeds), 1, r, r) standard-normal noise on the CPU, image i's from seeds[i].

        Each image draws all its maps from one private generator seeded by sha256(noise_key,
        seed), so an image's noise is the same in any batch, position and worker, differs from
        image to image (NVIDIA's noise_mode='random', made reproducible) and from model to model.
        """
        key = self.noise_key()
        sides = [layer.noise.const.shape[-1] for layer in self.layers]
        per_image = []
        for seed in seeds:
            digest = hashlib.sha256(key + int(seed).to_bytes(8, "little")).digest()
            rng = torch.Generator("cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)
            per_image.append([torch.randn(1, side, side, generator=rng) for side in sides])
        if not per_image:
            return [torch.empty(0, 1, side, side) for side in sides]
        return [torch.stack(maps) for maps in zip(*per_image)]

    def forward(self, z: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        # seeds: the seed of each latent; eval mode with noise_mode "seeded" draws noise from them
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        noise = None
        if not self.training and self.noise_mode == "seeded":
            if seeds is None or len(seeds) != len(z):
                raise GeneratorError(f"noise_mode 'seeded' draws each image's noise from its seed: pass one "
                                     f"seed per latent (got {None if seeds is None else len(seeds)} for "
                                     f"{len(z)}), as generators.base.render does")
            noise = [n.to(z) for n in self.noise_maps(seeds)]
        w = self.mapping(z)
        if not self.training:
            w = truncate(w, self.mapping.w_avg, self.truncation_psi)
        ws = broadcast_styles(w, self.num_ws, mixing_prob=self.mixing_prob, mapping=self.mapping,
                              rng=self.rng if self.training else None)
        x = self.synthesis(ws, noise)
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        # Training needs the gradient outside [-1, 1]; samples are clamped as images anyway.
        return x if self.training else x.clamp(-1, 1)


def training_rng() -> torch.Generator:
    """A private CPU generator for training-time noise and style mixing, seeded from the
    construction RNG (an isolated_rng block in training), so the global RNG is never drawn."""
    return torch.Generator("cpu").manual_seed(int(torch.randint(0, 2**62, ())))


class NoiseInjection(nn.Module):
    """Adds strength * noise: the given per-image maps, else fresh N(0, 1) in training, else the
    stored constant map (eval mode, noise_mode "const").

    StyleGAN learns one strength per channel, StyleGAN2 a single scalar per layer. The constant
    map is drawn from the construction RNG, like NVIDIA's noise_const, so each model has its own.
    """

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        # channels: number of strengths (1 = one shared scalar); resolution: side of the noise map
        self.strength = nn.Parameter(torch.zeros(channels))
        self.register_buffer("const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None, rng: torch.Generator | None) -> torch.Tensor:
        # noise: (N, 1, H, W) maps for this batch (seeded eval noise) or None
        if noise is not None:
            assert noise.shape == (x.shape[0], 1, *x.shape[2:]), (tuple(noise.shape), tuple(x.shape))
        elif self.training and rng is not None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], generator=rng).to(x)
        else:
            noise = self.const.to(x)
        return x + self.strength.view(1, -1, 1, 1) * noise.to(x)


# --- discriminator ------------------------------------------------------------------------------

class MinibatchStd(nn.Module):
    """Appends the std of features across groups of samples as an extra channel (D only)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size  # samples per statistics group (4 in both papers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # The largest group size <= group_size that divides the batch: any batch size works.
        g = max(d for d in range(1, min(self.group_size, n) + 1) if n % d == 0)
        y = x.reshape(g, n // g, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # (n/g, c, h, w)
        y = y.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorBlock(nn.Module):
    """3x3 conv, then a downsampling 3x3 conv; with `residual`, plus a blurred 1x1 shortcut / sqrt(2).

    Downsampling conv: StyleGAN2's blur + stride-2 conv, or with `pool` StyleGAN's D_basic
    "Conv1_down": blur (same size), 3x3 conv, 2x2 average pooling, then bias and lrelu (NVIDIA's
    conv2d_downscale2d; its fused form at >= 128 px is the same operation as one strided 4x4 conv).
    """

    def __init__(self, in_ch: int, out_ch: int, residual: bool, taps: Sequence[int], pool: bool = False):
        super().__init__()
        # in_ch/out_ch: channels in and out; residual: StyleGAN2's resnet D, else ProGAN's plain
        # block; taps: blur filter before downsampling; pool: StyleGAN's conv-then-average-pool
        # downsampling instead of a stride-2 conv (plain blocks only)
        assert not (pool and residual), "StyleGAN's pooled downsampling belongs to the plain block"
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, taps=taps)
        self.pool = pool
        if pool:
            self.blur = Blur(taps, ((len(taps) - 1) // 2, len(taps) // 2))
            self.conv1 = EqualConv2d(in_ch, out_ch, 3, activation=False)
        else:
            self.conv1 = EqualConv2d(in_ch, out_ch, 3, down=True, taps=taps)
        self.skip = (EqualConv2d(in_ch, out_ch, 1, bias=False, activation=False, down=True, taps=taps)
                     if residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv0(x)
        if self.pool:
            # The bias added before pooling equals one added after it: pooling keeps constants.
            return lrelu(F.avg_pool2d(self.conv1(self.blur(h)), 2))
        h = self.conv1(h)
        if self.skip is None:
            return h
        return (h + self.skip(x)) / math.sqrt(2)


class StyleDiscriminator(nn.Module):
    """image (N, 3, R, R) -> logits (N,): fromRGB, down-blocks to 4x4, minibatch stddev, conv, 2 FCs.

    `r1_gamma` and `r1_interval` travel with the network so discriminator_loss and
    lazy_regularizers can apply them.
    """

    def __init__(self, resolution: int, widths: dict[int, int], *, residual: bool,
                 taps: Sequence[int], r1_gamma: float, r1_interval: int, mbstd_group: int = 4,
                 pool: bool = False):
        super().__init__()
        # resolution: input side; widths: channels per resolution (layer_widths); residual: block
        # type; taps: blur filter; r1_gamma: R1 weight; r1_interval: apply R1 every this many
        # updates (scaled up to match); mbstd_group: minibatch-stddev group size; pool:
        # StyleGAN's blur, conv, 2x2 average downsampling (DiscriminatorBlock)
        self.resolution = resolution
        self.r1_gamma = r1_gamma
        self.r1_interval = r1_interval
        self.from_rgb = EqualConv2d(3, widths[resolution], 1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DiscriminatorBlock(widths[res], widths[res // 2], residual, taps, pool))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c = widths[4]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(c + 1, c, 3)
        self.fc = EqualLinear(c * 16, c, activation=True)
        self.out = EqualLinear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, self.resolution, self.resolution), (
            f"expected (N, 3, {self.resolution}, {self.resolution}), got {tuple(x.shape)}")
        h = self.conv(self.mbstd(self.blocks(self.from_rgb(x))))
        return self.out(self.fc(h.flatten(1))).squeeze(1)


# --- losses ---------------------------------------------------------------------------------

def r1_penalty(disc: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 norm of d D(x) / d x at real images (N,), differentiable in D's weights."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(real).sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3))


def discriminator_loss(disc: StyleDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss, softplus(D(fake)) + softplus(-D(real)), plus gamma/2 * R1.

    D runs on the fakes and on the reals in two separate passes, as NVIDIA's Dgen and Dreal
    phases do: in one concatenated batch, minibatch-stddev groups would mix real and fake
    samples, so a fake's logit would depend on the real images next to it.

    R1 is part of this loss only with r1_interval 1 (NVIDIA's Dboth phase); with k > 1 it is
    lazy_regularizers' own step every k D updates (NVIDIA's Dreg phase).
    """
    loss = F.softplus(disc(fake)).mean() + F.softplus(-disc(real)).mean()
    if disc.r1_gamma > 0 and disc.r1_interval == 1:
        loss = loss + r1_penalty(disc, real).mean() * (disc.r1_gamma / 2)
    return loss


def lazy_regularizers(gen: nn.Module, disc: StyleDiscriminator) -> dict[str, LazyRegularizer]:
    """D's lazy R1, gamma/2 * E||grad D(x)||^2 on the reals, when r1_interval > 1 (see base.LazyRegularizer)."""
    if disc.r1_gamma > 0 and disc.r1_interval > 1:
        return {"d": LazyRegularizer(disc.r1_interval,
                                     lambda real: r1_penalty(disc, real).mean() * (disc.r1_gamma / 2))}
    return {}


def generator_loss(disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss softplus(-D(G(z)))."""
    return F.softplus(-disc(fake)).mean()
