"""The Generator protocol every image source satisfies, and the helpers the sources share.

Reproducibility rests on two conventions fixed here:

* the latent of seed ``s`` is ``torch.randn(dim_z, generator=torch.Generator("cpu").manual_seed(s))``,
  drawn one seed at a time on the CPU, so it is the same whatever the batch and the device;
  networks then always run on fixed-size batches (see render), so image ``s`` is the same bytes
  whatever the batch it is requested in. A network whose images need randomness besides the
  latent (StyleGAN's per-layer noise) declares ``takes_seeds = True`` and render hands it each
  latent's seed, from which it draws that randomness per image. (Other hardware or library
  versions may still round a few pixels differently: checkpoint sha256 + seed name an image,
  not a bit pattern.)
* network output in [-1, 1] becomes pixels as ``((x.clamp(-1, 1) + 1) * 127.5).round()``
  (round half to even), the inverse of the ``x / 127.5 - 1`` used to feed training images.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

# Networks always run on this many latents at once (see render); part of the image
# definition: changing it can change the rounding of a few pixels.
SAMPLE_BATCH = 32
# Seeds go straight to torch.Generator.manual_seed; keeping them non-negative and below 2**63
# means the same seed never silently aliases another one.
MAX_SEED = 2**63 - 1


class GeneratorError(Exception):
    """A generator cannot be loaded, trained or sampled; the message names the file and the problem."""


@runtime_checkable
class Generator(Protocol):
    """Anything that turns seeds into images: a network checkpoint or a folder of files."""

    arch: str  # registry name, e.g. "sngan" or "folder"
    resolution: int  # side of the square images sample() returns
    checkpoint_sha256: str  # identifies the weights (or, for a folder, its file listing)

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        """uint8 (len(seeds), resolution, resolution, 3) RGB; image i depends on seeds[i] only."""
        ...


class NetworkFamily(Protocol):
    """What a noise-to-image architecture module (e.g. generators.sngan) provides to the registry.

    Modules satisfy this structurally; nothing registers itself. The generator network maps
    (N, dim_z) latents to (N, 3, resolution, resolution) in [-1, 1] and exposes `dim_z` and
    `resolution` attributes. Adversarial families give the two networks and the two losses,
    and generators.training.fit runs the alternating updates; each loss is the whole objective
    of its update, penalties (gradient penalty, R1) included, because only the family knows
    what its penalty needs.

    Optional hooks, looked up with getattr:

    * ``set_progress(gen, disc, step, steps)``: called before every generator update (step is
      1-based), for schedules such as ProGAN's growing and fade-in. The final state must be
      stored in the generator's buffers, so a checkpoint samples what training ended with.
    * a generator network with ``takes_seeds = True`` is called as ``net(z, seeds=...)`` by
      render, with the seed of every latent (padding rows included), and must draw any
      per-image randomness from those seeds only.
    * ``lazy_regularizers(gen, disc) -> {"g" | "d": LazyRegularizer}``: penalties that take
      their own optimiser step every `interval` updates of their network (StyleGAN2's lazy
      regularisation); the loop also scales that network's Adam settings (see LazyRegularizer).
    * ``fit(images, config, options, *, device, on_step) -> training.FitResult``: a family that
      does not train adversarially (diffusion) trains itself; build_discriminator and the
      losses are then not needed.
    * ``EMA``: a generators.ema.EmaSetting, for a family whose published samples come from an
      exponential moving average of the generator's weights; the shared loop then keeps that
      copy, and it is what the checkpoint stores.
    """

    NAME: str
    RESOLUTIONS: tuple[int, ...]
    # The published optimiser setting: {"lr_g", "lr_d", "betas", "n_dis"}; a training run
    # uses these where the caller gives None.
    TRAIN_DEFAULTS: Mapping[str, Any]

    def parse_options(self, options: Mapping[str, Any] | None) -> Any: ...
    def options_dict(self, options: Any) -> dict[str, Any]: ...
    def build_generator(self, resolution: int, options: Any) -> nn.Module: ...
    def build_discriminator(self, resolution: int, options: Any) -> nn.Module: ...
    def discriminator_loss(self, disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Loss of one discriminator update; `fake` is detached, both are (B, 3, R, R) in [-1, 1]."""
        ...
    def generator_loss(self, disc: nn.Module, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Loss of one generator update; `fake` carries gradients, `real` is the last D batch."""
        ...


@dataclasses.dataclass(frozen=True)
class LazyRegularizer:
    """A penalty minimised in its own optimiser step every `interval` updates of one network:
    StyleGAN2's lazy regularisation (Sec. 3.1), NVIDIA's Greg / Dreg training phases.

    As in NVIDIA's training_loop, the step runs on updates 1, 1 + interval, ... of its network,
    its loss is the penalty times `interval` (the same average weight as a penalty in every
    update), and with interval k > 1 the network's Adam lr is multiplied by k / (k + 1) and its
    betas raised to that power, since the network now takes k + 1 steps per k updates.
    """

    interval: int  # updates of the network between two regularisation steps
    # G's: latents (B, dim_z) -> scalar penalty; D's: the real batch (B, 3, R, R) -> scalar penalty
    penalty: Callable[[torch.Tensor], torch.Tensor]


def parse_dataclass_options(name: str, cls: type, options: Mapping[str, Any] | None) -> Any:
    """Options of dataclass `cls` from a dict: unknown keys are an error; int fields must be
    positive integers; float fields finite numbers in [0, field.metadata["max"]] (inf if unset);
    str fields one of field.metadata["choices"]."""
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise GeneratorError(f"unknown {name} options {unknown}; known: {sorted(fields)}")
    values = {}
    for key, value in options.items():
        kind = fields[key].type
        if kind in ("str", str):
            choices = fields[key].metadata["choices"]
            if value not in choices:
                raise GeneratorError(f"{name} option {key}={value!r} must be one of {list(choices)}")
        elif kind in ("int", int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GeneratorError(f"{name} option {key}={value!r} must be a positive integer")
        else:
            top = fields[key].metadata.get("max", math.inf)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0 <= value <= top or not math.isfinite(value):
                raise GeneratorError(f"{name} option {key}={value!r} must be a number in [0, {top}]")
            value = float(value)
        values[key] = value
    return cls(**values)


def check_seeds(seeds: Sequence[int]) -> list[int]:
    """Seeds as plain ints, rejecting bools, floats and anything outside [0, MAX_SEED]."""
    out = []
    for s in seeds:
        if isinstance(s, bool):
            raise GeneratorError(f"seed {s!r} is a bool, not an integer")
        try:
            value = operator.index(s)
        except TypeError:
            raise GeneratorError(f"seed {s!r} is not an integer") from None
        if not 0 <= value <= MAX_SEED:
            raise GeneratorError(f"seed {value} is outside [0, 2**63 - 1]")
        out.append(value)
    return out


def seed_latents(seeds: Sequence[int], dim_z: int) -> torch.Tensor:
    """(len(seeds), dim_z) float32 standard-normal latents on the CPU, one private RNG per seed."""
    seeds = check_seeds(seeds)
    if not seeds:
        return torch.empty(0, dim_z)
    return torch.stack([torch.randn(dim_z, generator=torch.Generator("cpu").manual_seed(s))
                        for s in seeds])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) floats in [-1, 1] -> uint8 (N, H, W, 3): ((x.clamp(-1, 1) + 1) * 127.5).round()."""
    assert x.ndim == 4 and x.shape[1] == 3, f"expected (N, 3, H, W), got {tuple(x.shape)}"
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).cpu().numpy())


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1], the inverse of to_uint8 up to rounding."""
    assert images.ndim == 4 and images.shape[3] == 3 and images.dtype == torch.uint8, (
        f"expected uint8 (N, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2).float() / 127.5 - 1


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Run a block on a private CPU RNG seeded with `seed`, leaving the global one untouched.

    Module constructors (default initialisers, spectral norm's power-iteration vector) draw
    from the global RNG; building networks inside this block makes them a function of `seed`
    alone without disturbing whatever else the process is doing.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def render(net: nn.Module, seeds: Sequence[int], device: torch.device | str) -> np.ndarray:
    """Images for `seeds` from a noise-to-image network, in eval mode (BatchNorm running stats).

    The network always runs on batches of exactly SAMPLE_BATCH latents (the last one padded
    with zeros) because convolution libraries pick kernels by batch size, and different
    kernels round differently: measured here, batch 1 vs 64 moved outputs by ~1e-5 and
    flipped 133 of 3.1M pixels. With a fixed shape and no cross-sample operations in eval
    mode, image s is the same bytes in whatever batch or position it is requested.
    A network with ``takes_seeds`` also gets the seeds (padding rows: seed 0, discarded).
    The network's train/eval flag is restored afterwards so training can call this mid-run.
    """
    seeds = check_seeds(seeds)
    latents = seed_latents(seeds, net.dim_z)
    takes_seeds = getattr(net, "takes_seeds", False)
    was_training = net.training
    net.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(latents), SAMPLE_BATCH):
                z = latents[start:start + SAMPLE_BATCH]
                padded = torch.cat([z, z.new_zeros(SAMPLE_BATCH - len(z), z.shape[1])]).to(device)
                if takes_seeds:
                    chunk_seeds = seeds[start:start + SAMPLE_BATCH]
                    out = net(padded, seeds=chunk_seeds + [0] * (SAMPLE_BATCH - len(z)))
                else:
                    out = net(padded)
                chunks.append(to_uint8(out[:len(z)]))
    finally:
        net.train(was_training)
    if not chunks:
        return np.zeros((0, net.resolution, net.resolution, 3), dtype=np.uint8)
    return np.concatenate(chunks)


class NetworkGenerator:
    """A Generator backed by an in-memory noise-to-image network (see generators.checkpoint.load_network)."""

    def __init__(self, arch: str, net: nn.Module, resolution: int, checkpoint_sha256: str,
                 device: str = "cpu", options: Mapping[str, Any] | None = None):
        self.arch = arch  # registry name the weights belong to
        # The family options `net` was built with (as a sidecar stores them); None when unknown.
        self.options = None if options is None else dict(options)
        self.resolution = resolution  # side of the images `net` produces
        self.checkpoint_sha256 = checkpoint_sha256  # sha256 of the .safetensors the weights came from
        self.device = torch.device(device)  # where the network runs; latents are drawn on the CPU anyway
        self.net = net.to(self.device).eval()

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        seeds = check_seeds(seeds)
        images = render(self.net, seeds, self.device)
        assert images.shape == (len(seeds), self.resolution, self.resolution, 3), images.shape
        return images
