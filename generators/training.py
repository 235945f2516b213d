"""Train a noise-to-image generator from scratch on an in-memory set of photos.

Used when an architecture has no checkpoint: a brief run gives a generator whose images carry
that architecture's fingerprints, which is what attribution needs, even if they are not pretty.
Adversarial families share one loop (Adam, n_dis D updates per G update, the family's losses);
a family with its own `fit` (diffusion) trains itself. Optimiser settings the caller leaves as
None take the family's published TRAIN_DEFAULTS, and the resolved values are recorded.

A family with an `EMA` setting (ProGAN, the StyleGANs) keeps an exponential moving average of
the generator's weights (generators.ema) after every G update, as the official code does; that
copy is what progress grids show, what the checkpoint stores and what a build samples, and the
sidecar records the setting. The trained generator itself is not saved.

Determinism: network initialisation runs on a private RNG seeded with `seed`, and one
torch.Generator seeded with `seed` draws every batch index and latent, so the same inputs give
the same weights on the same software and hardware. The global RNG is never touched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.images import encode_png, image_grid
from generators.base import GeneratorError, LazyRegularizer, NetworkFamily, isolated_rng, render, to_float
from benchmark.atomic import write_bytes
from generators.checkpoint import checkpoint_paths, is_reusable, save_checkpoint
from generators.ema import EmaSetting, GeneratorEma
from generators.resume import TrainingState

log = logging.getLogger(__name__)

# Bumped whenever the training code makes other weights from the same settings and photos, so
# a build never reuses a checkpoint that older code trained. 2: separate D passes for fakes
# and reals, generator EMA saved, lazy R1 / path length steps, per-model noise maps.
TRAINING_VERSION = 2

# Fixed seeds for sample grids, so grids of different runs and steps show the same latents.
GRID_SEEDS = range(64)
GRID_COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class GeneratorTraining:
    """How to train a generator; the one shape these settings take from the build config's
    `train:` section (or the CLI's flags) to generators.train and the checkpoint sidecar.

    Not eval.train_config.GeneratorTraining, which trains attribution models. Optimiser settings left
    as None take the family's published TRAIN_DEFAULTS: resolved(family) fills them in, and
    the resolved values are what a run uses and its sidecar records.
    """

    steps: int  # generator updates
    batch_size: int  # images per D batch and latents per G batch
    seed: int  # seeds initialisation, batch sampling and latents
    lr_g: float | None = None  # generator Adam learning rate
    lr_d: float | None = None  # discriminator Adam learning rate (unused by non-adversarial families)
    betas: tuple[float, float] | None = None  # Adam betas for both networks
    n_dis: int | None = None  # discriminator updates per generator update

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "n_dis"):
            value = getattr(self, name)
            if name == "n_dis" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GeneratorError(f"training {name} must be a positive integer, not {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise GeneratorError(f"training seed must be a non-negative integer, not {self.seed!r}")
        if not all(lr is None or lr > 0 for lr in (self.lr_g, self.lr_d)):
            raise GeneratorError(f"learning rates must be positive, not {self.lr_g}, {self.lr_d}")
        if self.betas is not None and (len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas)):
            raise GeneratorError(f"Adam betas must be two numbers in [0, 1), not {self.betas!r}")

    def resolved(self, family: NetworkFamily) -> "GeneratorTraining":
        """These settings with each None replaced by `family`'s default."""
        filled = {k: family.TRAIN_DEFAULTS[k] if getattr(self, k) is None else getattr(self, k)
                  for k in ("lr_g", "lr_d", "betas", "n_dis")}
        return dataclasses.replace(self, **{**filled, "betas": tuple(filled["betas"])})


@dataclasses.dataclass(frozen=True)
class StepStats:
    """What a progress callback receives after every generator update."""

    step: int  # generator updates done so far (1-based)
    steps: int  # generator updates in the run
    d_loss: float  # discriminator loss of the last D update
    g_loss: float  # generator loss of this update
    steps_per_s: float  # average rate since the start of the run


@dataclasses.dataclass
class FitResult:
    generator: nn.Module  # what to save and sample: the EMA copy when the run keeps one
    discriminator: nn.Module | None
    last: StepStats
    raw_generator: nn.Module | None = None  # the optimised generator, when `generator` is its EMA
    ema: EmaSetting | None = None  # the EMA setting the run used


def images_sha256(images: np.ndarray) -> str:
    """sha256 of images.tobytes(), without the copy tobytes() would make."""
    return hashlib.sha256(np.ascontiguousarray(images).reshape(-1).data).hexdigest()


def _check_images(images: np.ndarray, family: NetworkFamily) -> int:
    """The resolution of a training set, after checking its layout."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
            or images.shape[3] != 3 or images.shape[1] != images.shape[2] or len(images) == 0:
        shape = getattr(images, "shape", None)
        raise GeneratorError(f"training images must be uint8 (N, R, R, 3) with N >= 1, "
                             f"got {getattr(images, 'dtype', type(images).__name__)} {shape}")
    resolution = images.shape[1]
    if resolution not in family.RESOLUTIONS:
        raise GeneratorError(f"{family.NAME} trains at resolutions {family.RESOLUTIONS}, "
                             f"images are {resolution} px")
    return resolution


def resolve_config(family: NetworkFamily, **settings: Any) -> GeneratorTraining:
    """GeneratorTraining(**settings) resolved for `family` (a shorthand for fit's callers)."""
    return GeneratorTraining(**settings).resolved(family)


def fit(family: NetworkFamily, images: np.ndarray, config: GeneratorTraining, options: Any, *,
        device: str = "cpu", on_step: Callable[[StepStats, nn.Module], None] | None = None,
        state: TrainingState | None = None) -> FitResult:
    """Train a fresh generator (and discriminator) of `family` and return them.

    With `state`, the run first resumes from its last snapshot, if any, and snapshots itself
    every state.every steps; otherwise nothing is written. `on_step` gets the network that
    would be saved now: the EMA copy when the family keeps one.
    """
    resolution = _check_images(images, family)
    own_fit = getattr(family, "fit", None)
    if own_fit is not None:
        return own_fit(images, config, options, device=device, on_step=on_step, state=state)
    set_progress = getattr(family, "set_progress", None)
    device = torch.device(device)
    with isolated_rng(config.seed):
        gen = family.build_generator(resolution, options).to(device).train()
        disc = family.build_discriminator(resolution, options).to(device).train()
    ema_setting = getattr(family, "EMA", None)
    ema = GeneratorEma(gen, ema_setting) if ema_setting is not None else None
    sampled = ema.module if ema is not None else gen
    rng = torch.Generator("cpu").manual_seed(config.seed)
    lazy = getattr(family, "lazy_regularizers", None)
    lazy = lazy(gen, disc) if lazy is not None else {}
    opt_g = torch.optim.Adam(gen.parameters(), **lazy_adam(config.lr_g, config.betas, lazy.get("g")))
    opt_d = torch.optim.Adam(disc.parameters(), **lazy_adam(config.lr_d, config.betas, lazy.get("d")))
    # torch.from_numpy shares memory with the caller's array; a read-only array needs a copy.
    pixels = torch.from_numpy(images if images.flags.writeable else images.copy())
    batch = config.batch_size

    def real_batch() -> torch.Tensor:
        # Drawn with replacement: no epoch bookkeeping, and a set smaller than a batch still works.
        idx = torch.randint(len(pixels), (batch,), generator=rng)
        return to_float(pixels[idx].to(device))

    def latents() -> torch.Tensor:
        return torch.randn(batch, gen.dim_z, generator=rng).to(device)

    modules, optimizers = {"generator": gen, "discriminator": disc}, {"g": opt_g, "d": opt_d}
    if ema is not None:
        modules["generator_ema"] = ema.module
    done = 0
    if state is not None:
        done, rngs = state.restore(modules, optimizers, {"batches": None})
        if done:
            rng.set_state(rngs["batches"])
    log_every = max(1, config.steps // 10)
    start = time.perf_counter()
    stats = None
    for step in range(done + 1, config.steps + 1):
        if set_progress is not None:
            set_progress(gen, disc, step, config.steps)
        for i in range(config.n_dis):
            real = real_batch()
            with torch.no_grad():
                fake = gen(latents())
            d_loss = family.discriminator_loss(disc, real, fake)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if lazy_due(lazy.get("d"), (step - 1) * config.n_dis + i):
                lazy_step(lazy["d"], real, opt_d)
        # D's parameter gradients are not needed for the G update; skipping them saves about a
        # third of D's backward pass.
        disc.requires_grad_(False)
        g_loss = family.generator_loss(disc, gen(latents()), real)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if lazy_due(lazy.get("g"), step - 1):
            lazy_step(lazy["g"], latents(), opt_g)
        disc.requires_grad_(True)
        if ema is not None:
            ema.update(gen, step, batch)

        stats = StepStats(step, config.steps, d_loss.item(), g_loss.item(),
                          (step - done) / max(time.perf_counter() - start, 1e-9))
        if not (math.isfinite(stats.d_loss) and math.isfinite(stats.g_loss)):
            raise GeneratorError(f"training diverged at step {step}: "
                                 f"d_loss {stats.d_loss}, g_loss {stats.g_loss}")
        if step % log_every == 0 or step == config.steps:
            log.info("%s step %d/%d d_loss %.4f g_loss %.4f %.2f steps/s", family.NAME, step,
                     config.steps, stats.d_loss, stats.g_loss, stats.steps_per_s)
        if state is not None and state.due(step, config.steps):
            state.save(step, modules, optimizers, {"batches": rng.get_state()})
        if on_step is not None:
            on_step(stats, sampled)
    if ema is None:
        return FitResult(generator=gen.eval(), discriminator=disc.eval(), last=stats)
    return FitResult(generator=ema.module, discriminator=disc.eval(), last=stats,
                     raw_generator=gen.eval(), ema=ema_setting)


def lazy_adam(lr: float, betas: tuple[float, float], reg: LazyRegularizer | None) -> dict[str, Any]:
    """Adam lr and betas of a network, scaled for its lazy regulariser as NVIDIA's
    training_loop does (mb_ratio = k / (k + 1) for interval k > 1)."""
    if reg is None or reg.interval == 1:
        return {"lr": lr, "betas": betas}
    ratio = reg.interval / (reg.interval + 1)
    return {"lr": lr * ratio, "betas": tuple(b**ratio for b in betas)}


def lazy_due(reg: LazyRegularizer | None, update: int) -> bool:
    """Whether the 0-based `update` of a network is followed by its regularisation step."""
    return reg is not None and update % reg.interval == 0


def lazy_step(reg: LazyRegularizer, batch: torch.Tensor, opt: torch.optim.Optimizer) -> None:
    """One optimiser step on the penalty alone, weighted by the interval (NVIDIA's gain)."""
    loss = reg.penalty(batch) * reg.interval
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def write_grid(path: Path, gen: nn.Module, device: str = "cpu") -> Path:
    """Save an 8x8 grid of images for GRID_SEEDS as PNG (atomically)."""
    grid = image_grid(render(gen, GRID_SEEDS, device), GRID_COLUMNS)
    data = encode_png(grid)
    write_bytes(path, data)
    return path


def _family(arch: str) -> NetworkFamily:
    # Imported here, not at module level: generators/__init__.py imports this module while it
    # builds the registry.
    from generators import family

    module = family(arch)
    if not hasattr(module, "build_generator"):
        raise GeneratorError(f"cannot train arch {arch!r}: it serves existing images, it has no network")
    return module


def _run_settings(config: GeneratorTraining, data_sha256: str) -> dict[str, Any]:
    """What decides a run's weights besides arch, resolution and options; the sidecar's `train`
    block holds these, and a checkpoint is reused only when all of them match."""
    return {"steps": config.steps, "batch_size": config.batch_size, "lr_g": config.lr_g,
            "lr_d": config.lr_d, "betas": list(config.betas), "n_dis": config.n_dis,
            "seed": config.seed, "data_sha256": data_sha256, "torch": torch.__version__,
            "training_version": TRAINING_VERSION}


def is_trained(out: Path | str, arch: str, config: GeneratorTraining,
               options: Mapping[str, Any] | None, *, data_sha256: str, resolution: int) -> bool:
    """Whether OUT already holds what train(arch, images, OUT, config, options) would write:
    same arch and resolution, the same options once defaults are filled in (a default that
    changed makes another network), the same resolved optimiser settings, photos, torch and
    TRAINING_VERSION (the comparison is generators.checkpoint.is_reusable)."""
    family = _family(arch)
    return is_reusable(out, arch=family.NAME, resolution=resolution,
                       options=family.options_dict(family.parse_options(options)),
                       train=_run_settings(config.resolved(family), data_sha256))


def train(arch: str, images: np.ndarray, out: Path | str, config: GeneratorTraining,
          options: Mapping[str, Any] | None = None, *,
          progress: Callable[[StepStats], None] | None = None, grid_every: int = 0,
          checkpoint_every: int = 0, device: str = "cpu") -> Path:
    """Train `arch` on `images` (uint8 (N, R, R, 3), already at the target resolution).

    Writes OUT.safetensors (the generator's EMA copy for families with one) + OUT.json (see
    generators.checkpoint) and OUT.grid.png of the same network; with
    grid_every > 0 also OUT.grid.STEP.png every grid_every steps. With checkpoint_every > 0
    the whole training state is saved every that many steps (OUT.resume.*, see
    generators.resume) and a rerun of the same training resumes from it, ending with the
    same weights as an uninterrupted run; the snapshot is removed at the end. Returns the
    .safetensors path.
    """
    family = _family(arch)
    resolution = _check_images(images, family)
    config = config.resolved(family)
    parsed = family.parse_options(options)
    paths = checkpoint_paths(out)
    paths.weights.parent.mkdir(parents=True, exist_ok=True)

    def on_step(stats: StepStats, gen: nn.Module) -> None:
        if progress is not None:
            progress(stats)
        if grid_every and stats.step % grid_every == 0 and stats.step < stats.steps:
            write_grid(paths.grid.with_suffix(f".{stats.step:06d}.png"), gen, device)

    log.info("training %s at %d px on %d images: %s, options %s", family.NAME, resolution,
             len(images), config, parsed)
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise GeneratorError(f"checkpoint_every must be a non-negative integer, not {checkpoint_every!r}")
    data_sha256 = images_sha256(images)
    ema_setting = getattr(family, "EMA", None)
    # The EMA setting is part of the run: a snapshot taken under another one (or none) is not resumed.
    fingerprint = {"arch": family.NAME, "resolution": resolution, "options": family.options_dict(parsed),
                   "config": dataclasses.asdict(config), "data_sha256": data_sha256,
                   "ema": None if ema_setting is None else dataclasses.asdict(ema_setting),
                   "torch": torch.__version__, "training_version": TRAINING_VERSION}
    state = TrainingState(paths.weights, fingerprint, checkpoint_every) if checkpoint_every else None
    result = fit(family, images, config, parsed, device=device, on_step=on_step, state=state)
    train_info = {**_run_settings(config, data_sha256),
                  "ema": None if result.ema is None else dataclasses.asdict(result.ema),
                  "image_count": len(images)}
    save_checkpoint(paths.weights, result.generator, arch=family.NAME, resolution=resolution,
                    options=family.options_dict(parsed), train=train_info)
    write_grid(paths.grid, result.generator, device)
    if state is not None:
        state.clear()
    return paths.weights
