"""Image generators for the benchmark: seeds in, uint8 RGB images out.

    gen = generators.load("sngan", checkpoint=Path("ckpt/sngan_cat"), resolution=128)
    images = gen.sample([0, 1, 2])           # uint8 (3, 128, 128, 3)

    generators.train("sngan", photos, Path("ckpt/sngan_cat"),
                     generators.GeneratorTraining(steps=2000, batch_size=64, seed=0), {"ch": 64})

ARCHITECTURES maps a registry name (benchmark.protocol.GENERATOR_ARCHS) to the module that
implements it; family(name) imports it on first use, so opening one architecture never pays
for the others (the diffusion family pulls in diffusers). Network families provide the
NetworkFamily surface in generators.base; the "folder" source (generators.folder) serves
pre-generated images instead of running a network. To add an architecture, write its module,
add one line here and its name to benchmark.protocol.GENERATOR_ARCHS.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from generators import folder as folder_source
from generators.base import Generator, GeneratorError, NetworkGenerator
from benchmark.atomic import sha256_file
from generators.checkpoint import load_network
from generators.training import GeneratorTraining, StepStats, images_sha256, is_trained, train

ARCHITECTURES: dict[str, str] = {
    "progan": "generators.progan",
    "cramergan": "generators.cramergan",
    "mmdgan": "generators.mmdgan",
    "sngan": "generators.sngan",
    "stylegan": "generators.stylegan",
    "stylegan2": "generators.stylegan2",
    "stylegan3": "generators.stylegan3",
    "ddpm": "generators.ddpm",
    "ldm": "generators.latent_diffusion",
    "folder": "generators.folder",
}

__all__ = ["ARCHITECTURES", "Generator", "GeneratorError", "GeneratorTraining", "NetworkGenerator",
           "StepStats", "family", "images_sha256", "is_trained", "load", "sha256_file", "train"]


def family(arch: str) -> ModuleType:
    """The module implementing `arch`, imported on first use."""
    module = ARCHITECTURES.get(arch)
    if module is None:
        raise GeneratorError(f"unknown arch {arch!r}; known: {sorted(ARCHITECTURES)}")
    return importlib.import_module(module)


def load(arch: str, *, checkpoint: Path | None = None, folder: Path | None = None,
         resolution: int = 128, device: str = "cpu", trust_pickle: bool = False,
         settings: Mapping[str, Any] | None = None) -> Generator:
    """Open a generator: a network checkpoint for network architectures, a folder for "folder".

    `checkpoint` may be the stem, the .safetensors or the .json path, or another project's file
    (generators.external): a rosinality stylegan2-pytorch .pt for "stylegan2", read without
    unpickling code. NVIDIA .pkl files are pickles and are refused unless trust_pickle=True.
    For "ddpm", `folder` may instead name a local diffusers folder (a saved UNet2DModel with its
    scheduler config, or a DDPMPipeline folder; safetensors only, never the Hub); its
    checkpoint_sha256 is that of the UNet's weights file. "ldm" reads a local latent-diffusion
    folder (generators.latent_diffusion). `settings` (e.g. sample_steps) go to a diffusers
    folder's sampler as keyword arguments of its family's load_diffusers_folder. A network
    architecture without a checkpoint is an error: train one first with generators.train(...).
    """
    module = family(arch)
    if module is folder_source:
        if folder is None or checkpoint is not None:
            raise GeneratorError("arch 'folder' needs folder=... and no checkpoint")
        return folder_source.FolderGenerator(folder, resolution)
    load_folder = getattr(module, "load_diffusers_folder", None)
    if load_folder is not None and folder is not None and checkpoint is None:
        return load_folder(folder, resolution, device, **dict(settings or {}))
    if settings:
        raise GeneratorError(f"settings {sorted(settings)} apply to diffusers folders only")
    if checkpoint is None or folder is not None:
        raise GeneratorError(f"arch {arch!r} needs checkpoint=... and no folder "
                             f"(no checkpoint yet? create one with generators.train)")
    return load_network(checkpoint, module, resolution=resolution, device=device,
                        trust_pickle=trust_pickle)
