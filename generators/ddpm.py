"""DDPM (Ho, Jain & Abbeel, NeurIPS 2020) trained from scratch, sampled with DDIM (Song et al., ICLR 2021).

The network is diffusers' ``UNet2DModel`` configured as the DDPM U-Net: two residual blocks
per resolution, GroupNorm, SiLU, sinusoidal timestep embedding added in every residual block,
single-head self-attention at 16x16 and in the middle block, convolutional down/upsampling.
Channel multipliers per resolution: 32 px (1, 2, 2, 2) as Ho et al.'s CIFAR-10 model, 64 px
(1, 2, 3, 4) as Nichol & Dhariwal's ImageNet-64, 128 px (1, 1, 2, 3, 4) as Dhariwal & Nichol's
128 px model. ``ch`` is the base width: Ho et al. use 128; our default is 64, a ~half-width
network (21.4M parameters at 128 px) that a brief training run can move. GroupNorm uses
gcd(32, ch) groups so tiny test widths (ch=4, 8) still build.

Training (``fit``) is the paper's simple loss: x0 from the photos, t uniform in [0, T), noise
eps ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, MSE between the U-Net's output and
eps (or x0 / v for the other prediction types); Adam 2e-4, gradient norm clipped at 1, linear
learning-rate warm-up (5000 steps in the paper; option ``lr_warmup``), linear betas 1e-4..0.02
over T=1000 steps. The weights saved are an exponential moving average (generators.ema, shared
with the GANs; decay 0.9999 in the paper; option ``ema_decay``, 0 turns it off) with the warm-up
of TF's ExponentialMovingAverage, ``min(decay, (1+n)/(10+n))`` after n updates, so that short
runs still end with weights that moved (the authors' code, diffusion_tf/tpu_utils, uses 0.9999
from the start, 1e-10 only while the global step is below 1). Random horizontal flips (used for
CIFAR-10 in the paper) are left out, as in the shared adversarial loop: every family sees the
same photos.

Sampling is deterministic DDIM (eta = 0) over ``sample_steps`` steps spaced "trailing" (the
first step is at t = T-1, where x_T really is pure noise; Lin et al. 2024). The latent of a
seed (generators.base.seed_latents, dim_z = 3*R*R) *is* x_T, so image s depends on seed s only
and the checkpoint is just the U-Net's state_dict. The scheduler settings live in the options
(and so in the sidecar); the sampler builds a fresh DDIMScheduler per call, so no mutable
scheduler state is shared between calls.

``load_diffusers_folder`` opens a local diffusers folder (UNet2DModel.save_pretrained output
plus a scheduler config, or a DDPMPipeline folder with unet/ and scheduler/), safetensors only.
Nothing here contacts the Hugging Face Hub: HF_HUB_OFFLINE is set before diffusers is
imported, paths are checked to be local folders first, and loading passes local_files_only.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# Before diffusers: sets HF_HUB_OFFLINE, which huggingface_hub reads once at import.
from generators.diffusers_folder import (PICKLED_WEIGHTS_NAME, SCHEDULER_CONFIG_NAME,  # noqa: F401
                                         WEIGHTS_NAME, check_folder, load_component,
                                         read_json, weights_file)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel  # noqa: E402
from torch import nn  # noqa: E402

from benchmark.atomic import sha256_file  # noqa: E402
from generators.base import GeneratorError, NetworkGenerator, isolated_rng, to_float  # noqa: E402
from generators.ema import EmaSetting, GeneratorEma  # noqa: E402
from generators.resume import TrainingState  # noqa: E402
from generators.training import FitResult, StepStats, GeneratorTraining  # noqa: E402

log = logging.getLogger(__name__)

NAME = "ddpm"
RESOLUTIONS = (32, 64, 128)
# Ho et al.: Adam lr 2e-4 (CIFAR-10), TF default betas. No discriminator: lr_d and n_dis are
# unused (lr_d only has to pass GeneratorTraining's checks).
TRAIN_DEFAULTS = {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.9, 0.999), "n_dis": 1}

# Multipliers of `ch` per U-Net level; level i works at resolution / 2**i.
CHANNEL_MULTS = {
    32: (1, 2, 2, 2),
    64: (1, 2, 3, 4),
    128: (1, 1, 2, 3, 4),
}
# Self-attention at this feature-map side, as in the paper.
ATTENTION_RESOLUTION = 16
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("trailing", "leading", "linspace")
# Ho et al. clip gradients to this global norm.
GRAD_CLIP = 1.0
UNET_CONFIG_NAME = "config.json"


@dataclasses.dataclass(frozen=True)
class DDPMOptions:
    """Network, noise-schedule, sampler and EMA settings stored in a checkpoint's sidecar."""

    ch: int = 64  # base width (block_out_channels = ch * CHANNEL_MULTS); paper 128
    layers_per_block: int = 2  # residual blocks per U-Net level, as in the paper
    attention: bool = True  # self-attention at 16x16 and in the middle block
    dropout: float = 0.0  # residual-block dropout while training (paper: 0.1 CIFAR-10, 0 else)
    num_train_timesteps: int = 1000  # T
    beta_schedule: str = "linear"  # one of BETA_SCHEDULES
    beta_start: float = 1e-4  # beta_1 of the linear schedules
    beta_end: float = 0.02  # beta_T of the linear schedules
    prediction_type: str = "epsilon"  # what the U-Net predicts: one of PREDICTION_TYPES
    clip_sample: bool = True  # clip the predicted x0 to [-1, 1] at every sampling step
    sample_steps: int = 50  # DDIM steps at sampling
    timestep_spacing: str = "trailing"  # how the DDIM steps are placed in [0, T)
    ema_decay: float = 0.9999  # EMA of the weights that is saved; 0 saves the raw weights
    lr_warmup: int = 5000  # steps of linear learning-rate warm-up; 0 for none


_CHOICES = {"beta_schedule": BETA_SCHEDULES, "prediction_type": PREDICTION_TYPES,
            "timestep_spacing": TIMESTEP_SPACINGS}


def _check_option(key: str, value: Any, default: Any) -> Any:
    """`value` validated against the type of the field's default; returns the normalised value."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise GeneratorError(f"ddpm option {key}={value!r} must be true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise GeneratorError(f"ddpm option {key}={value!r} must be an integer")
        least = 0 if key == "lr_warmup" else 1
        if value < least:
            raise GeneratorError(f"ddpm option {key}={value!r} must be at least {least}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise GeneratorError(f"ddpm option {key}={value!r} must be a number")
        value = float(value)
        if key in ("dropout", "ema_decay") and not 0 <= value < 1:
            raise GeneratorError(f"ddpm option {key}={value!r} must be in [0, 1)")
        if key in ("beta_start", "beta_end") and not 0 < value < 1:
            raise GeneratorError(f"ddpm option {key}={value!r} must be in (0, 1)")
        return value
    if value not in _CHOICES[key]:
        raise GeneratorError(f"ddpm option {key}={value!r} must be one of {list(_CHOICES[key])}")
    return value


def parse_options(options: Mapping[str, Any] | None) -> DDPMOptions:
    """Validated options, defaults filled in; unknown keys are an error, not ignored."""
    options = dict(options or {})
    fields = {f.name: f.default for f in dataclasses.fields(DDPMOptions)}
    if "dim_z" in options:
        raise GeneratorError("ddpm has no dim_z option: its latent is the 3*R*R noise image x_T")
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise GeneratorError(f"unknown ddpm options {unknown}; known: {sorted(fields)}")
    parsed = {key: _check_option(key, value, fields[key]) for key, value in options.items()}
    opts = DDPMOptions(**parsed)
    if opts.beta_start >= opts.beta_end:
        raise GeneratorError(f"ddpm options beta_start={opts.beta_start} must be below beta_end={opts.beta_end}")
    if opts.sample_steps > opts.num_train_timesteps:
        raise GeneratorError(f"ddpm option sample_steps={opts.sample_steps} exceeds "
                             f"num_train_timesteps={opts.num_train_timesteps}")
    return opts


def options_dict(options: DDPMOptions) -> dict[str, Any]:
    return dataclasses.asdict(options)


def _check_resolution(resolution: int) -> None:
    if resolution not in RESOLUTIONS:
        raise GeneratorError(f"ddpm supports resolutions {RESOLUTIONS}, not {resolution}")


def build_unet(resolution: int, options: DDPMOptions) -> UNet2DModel:
    """The DDPM U-Net for `resolution` (weights from the global RNG: build inside isolated_rng)."""
    _check_resolution(resolution)
    mults = CHANNEL_MULTS[resolution]
    attn = [options.attention and resolution // 2**i == ATTENTION_RESOLUTION for i in range(len(mults))]
    return UNet2DModel(
        sample_size=resolution,
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(options.ch * m for m in mults),
        layers_per_block=options.layers_per_block,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        add_attention=options.attention,
        attention_head_dim=None,  # one head spanning all channels, as in the paper
        norm_num_groups=math.gcd(32, options.ch),
        norm_eps=1e-6,
        dropout=options.dropout,
        # The embedding layout of the authors' TF code (as in diffusers' port of their CIFAR-10 model).
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
    )


def scheduler_config(options: DDPMOptions) -> dict[str, Any]:
    """Keyword arguments of the DDIM/DDPM schedulers for `options` (JSON-able)."""
    return {
        "num_train_timesteps": options.num_train_timesteps,
        "beta_schedule": options.beta_schedule,
        "beta_start": options.beta_start,
        "beta_end": options.beta_end,
        "prediction_type": options.prediction_type,
        "clip_sample": options.clip_sample,
        "timestep_spacing": options.timestep_spacing,
    }


_DDIM_KEYS = frozenset(inspect.signature(DDIMScheduler.__init__).parameters) - {"self"}


def ddim_settings(scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """The DDIMScheduler keyword arguments in a scheduler config (of any scheduler class)."""
    return {k: v for k, v in scheduler.items() if k in _DDIM_KEYS}


def ddim_denoise(unet: nn.Module, scheduler: DDIMScheduler, steps: int, x: torch.Tensor,
                 **unet_kwargs: Any) -> torch.Tensor:
    """x_T -> x_0 by `steps` deterministic DDIM steps (eta = 0) of a fresh `scheduler`.

    Pixels for DDPM, latents for latent diffusion; `unet_kwargs` (e.g. text embeddings) go to
    every U-Net call. init_noise_sigma and scale_model_input are 1 and the identity for DDIM,
    kept so the loop stays right for a scheduler where they are not.
    """
    scheduler.set_timesteps(steps)
    x = x * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        output = unet(scheduler.scale_model_input(x, t), t.to(x.device), **unet_kwargs).sample
        x = scheduler.step(output, t, x, eta=0.0).prev_sample
    return x


class DDIMSampler(nn.Module):
    """Latent (N, 3*R*R) = x_T -> image (N, 3, R, R) in [-1, 1] by deterministic DDIM (eta = 0).

    The only parameters are the U-Net's, so its state_dict is the checkpoint. No cross-sample
    operation and no randomness: each image is a function of its own latent.
    """

    def __init__(self, unet: UNet2DModel, resolution: int, scheduler: Mapping[str, Any], sample_steps: int):
        super().__init__()
        self.unet = unet  # predicts epsilon (or x0 / v, see scheduler["prediction_type"]) from (x_t, t)
        self.resolution = resolution  # side of the images
        self.dim_z = 3 * resolution * resolution  # the latent is the initial noise image
        # DDIMScheduler keyword arguments (noise schedule, prediction type, clipping, spacing).
        self.scheduler_config = ddim_settings(scheduler)
        self.sample_steps = sample_steps  # DDIM steps per image
        if not 1 <= sample_steps <= self.make_scheduler().config.num_train_timesteps:
            raise GeneratorError(f"ddpm sample_steps={sample_steps} must be in [1, num_train_timesteps]")

    def make_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler(**self.scheduler_config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        x = ddim_denoise(self.unet, self.make_scheduler(), self.sample_steps,
                         z.view(-1, 3, self.resolution, self.resolution))
        assert x.shape[1:] == (3, self.resolution, self.resolution), tuple(x.shape)
        return x.clamp(-1, 1)


def build_generator(resolution: int, options: DDPMOptions) -> DDIMSampler:
    return DDIMSampler(build_unet(resolution, options), resolution, scheduler_config(options),
                       options.sample_steps)


def _training_target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return x0
    return scheduler.get_velocity(x0, noise, t)


def denoising_loss(unet: nn.Module, scheduler: DDPMScheduler, x0: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor) -> torch.Tensor:
    """Ho et al.'s L_simple: MSE between the U-Net's output at x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps and its target."""
    x_t = scheduler.add_noise(x0, noise, t)
    return F.mse_loss(unet(x_t, t).sample, _training_target(scheduler, x0, noise, t))


def ema_setting(options: DDPMOptions) -> EmaSetting | None:
    """The EMA the options ask for; None when ema_decay is 0 (the raw weights are saved)."""
    # Not diffusers' EMAModel: that keeps shadow tensors apart from any module, while progress
    # grids and the checkpoint want a ready-to-sample module, as the GANs' EMA gives.
    return EmaSetting(beta=options.ema_decay, warmup=True) if options.ema_decay > 0 else None


def fit(images: np.ndarray, config: GeneratorTraining, options: DDPMOptions, *, device: str = "cpu",
        on_step: Callable[[StepStats, nn.Module], None] | None = None,
        state: TrainingState | None = None) -> FitResult:
    """Train a DDPM on uint8 (N, R, R, 3) images; returns a training.FitResult (discriminator None).

    Every batch index, timestep and noise tensor comes from one CPU torch.Generator seeded with
    config.seed; initialisation (and dropout, when enabled) runs on an isolated RNG seeded the
    same way, so the global RNG is left alone. StepStats.g_loss is the denoising MSE; there is
    no discriminator, so d_loss is 0. With `state`, the run resumes from its last snapshot and
    snapshots itself (generators.resume), the private global RNG state included.
    """
    resolution = images.shape[1]
    _check_resolution(resolution)
    device = torch.device(device)
    with isolated_rng(config.seed):
        sampler = build_generator(resolution, options).to(device)
    setting = ema_setting(options)
    ema = GeneratorEma(sampler, setting) if setting is not None else None
    unet = sampler.unet.train()
    train_scheduler = DDPMScheduler(**scheduler_config(options))
    rng = torch.Generator("cpu").manual_seed(config.seed)
    opt = torch.optim.Adam(unet.parameters(), lr=config.lr_g, betas=config.betas)
    warmup = options.lr_warmup
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0)
    pixels = torch.from_numpy(images if images.flags.writeable else images.copy())
    batch = config.batch_size
    modules = {"sampler": sampler, **({"ema": ema.module} if ema is not None else {})}
    optimizers = {"adam": opt, "warmup": lr_at}
    done, rngs = state.restore(modules, optimizers, {"batches": None, "global": None}) if state else (0, {})
    if done:
        rng.set_state(rngs["batches"])
    log_every = max(1, config.steps // 10)
    start = time.perf_counter()
    stats = None
    # Dropout draws from the global RNG; this keeps it private and seeded (CPU only).
    with isolated_rng(config.seed):
        if done:
            torch.set_rng_state(rngs["global"])
        for step in range(done + 1, config.steps + 1):
            # With replacement, like the adversarial loop: no epochs, tiny sets still work.
            idx = torch.randint(len(pixels), (batch,), generator=rng)
            x0 = to_float(pixels[idx]).to(device)
            t = torch.randint(options.num_train_timesteps, (batch,), generator=rng).to(device)
            noise = torch.randn(x0.shape, generator=rng).to(device)
            loss = denoising_loss(unet, train_scheduler, x0, t, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), GRAD_CLIP)
            opt.step()
            lr_at.step()
            if ema is not None:
                ema.update(sampler, step, batch)

            stats = StepStats(step, config.steps, 0.0, loss.item(),
                              (step - done) / max(time.perf_counter() - start, 1e-9))
            if not math.isfinite(stats.g_loss):
                raise GeneratorError(f"ddpm training diverged at step {step}: loss {stats.g_loss}")
            if step % log_every == 0 or step == config.steps:
                log.info("ddpm step %d/%d loss %.4f %.2f steps/s", step, config.steps,
                         stats.g_loss, stats.steps_per_s)
            if state is not None and state.due(step, config.steps):
                state.save(step, modules, optimizers, {"batches": rng.get_state(), "global": torch.get_rng_state()})
            if on_step is not None:
                on_step(stats, ema.module if ema is not None else sampler)
    if ema is None:
        return FitResult(generator=sampler.eval(), discriminator=None, last=stats)
    return FitResult(generator=ema.module, discriminator=None, last=stats, raw_generator=sampler.eval(),
                     ema=setting)


def _folder_layout(folder: Path) -> tuple[Path, Path]:
    """(unet dir, scheduler config file) of a UNet folder or a DDPMPipeline folder."""
    if (folder / "unet").is_dir():
        return folder / "unet", folder / "scheduler" / SCHEDULER_CONFIG_NAME
    nested = folder / "scheduler" / SCHEDULER_CONFIG_NAME
    return folder, nested if nested.is_file() else folder / SCHEDULER_CONFIG_NAME


def load_diffusers_folder(path: Path | str, resolution: int, device: str = "cpu", *,
                          sample_steps: int = DDPMOptions.sample_steps) -> NetworkGenerator:
    """A Generator from a local diffusers folder, sampled with DDIM (eta = 0) like our checkpoints.

    Accepts UNet2DModel.save_pretrained output with scheduler_config.json beside it (or in
    scheduler/), or a pipeline folder with unet/ and scheduler/. Only safetensors weights are
    read; the scheduler's noise schedule, prediction type, clipping and spacing are the folder's.
    checkpoint_sha256 is the sha256 of the weights file.
    """
    # Checked first so that a typo is never taken for a Hub repository id.
    folder = check_folder(Path(path))
    unet_dir, scheduler_path = _folder_layout(folder)
    unet_config = read_json(unet_dir / UNET_CONFIG_NAME, folder)
    weights = weights_file(unet_dir, folder)
    if unet_config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise GeneratorError(f"diffusers folder {folder}: {unet_dir / UNET_CONFIG_NAME} describes a "
                             f"{unet_config['_class_name']}, not an unconditional UNet2DModel")
    size = unet_config.get("sample_size")
    sizes = tuple(size) if isinstance(size, list) else (size, size)
    if sizes != (resolution, resolution):
        raise GeneratorError(f"diffusers folder {folder}: UNet sample_size {size} differs from the "
                             f"requested resolution {resolution}")
    if unet_config.get("in_channels", 3) != 3 or unet_config.get("out_channels", 3) != 3:
        raise GeneratorError(f"diffusers folder {folder}: UNet must map 3 channels to 3, config has "
                             f"{unet_config.get('in_channels')} -> {unet_config.get('out_channels')}")
    if unet_config.get("class_embed_type") is not None or unet_config.get("num_class_embeds") is not None:
        raise GeneratorError(f"diffusers folder {folder}: class-conditional UNets are not supported")
    scheduler = read_json(scheduler_path, folder)
    kind = scheduler.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise GeneratorError(f"diffusers folder {folder}: {scheduler_path} prediction_type {kind!r} "
                             f"is not one of {list(PREDICTION_TYPES)}")
    unet = load_component(UNet2DModel, unet_dir, folder)
    try:
        sampler = DDIMSampler(unet, resolution, scheduler, sample_steps)
    except GeneratorError as e:
        raise GeneratorError(f"diffusers folder {folder}: {e}") from e
    return NetworkGenerator(NAME, sampler, resolution, sha256_file(weights), device)
