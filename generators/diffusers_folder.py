"""Reading local diffusers model folders safely: the part every diffusion family shares.

A diffusers folder is JSON configs plus weights files, one sub-folder per component (unet/,
vae/, scheduler/, ...). The rules here hold for every family that opens one (generators.ddpm,
generators.latent_diffusion): only local folders (checked first, so a typo is never taken for
a Hub repository id; HF_HUB_OFFLINE is set before diffusers is imported; from_pretrained gets
local_files_only), only safetensors weights (a pickled .bin is refused by name), and every
problem is a GeneratorError naming the folder and the file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

# Before diffusers (and so huggingface_hub) is imported: huggingface_hub reads this once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmark.atomic import sha256_file  # noqa: E402
from generators.base import GeneratorError, isolated_rng  # noqa: E402

# diffusers writes these names; anything else in a folder (e.g. .bin) is not read.
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PICKLED_WEIGHTS_NAME = "diffusion_pytorch_model.bin"
CONFIG_NAME = "config.json"
SCHEDULER_CONFIG_NAME = "scheduler_config.json"


def check_folder(folder: Path) -> Path:
    """`folder` if it is a local folder; checked before anything else is read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeneratorError(f"diffusers folder {folder} does not exist or is not a folder")
    return folder


def read_json(path: Path, folder: Path) -> dict[str, Any]:
    """The JSON object in `path` (a file of diffusers folder `folder`)."""
    if not path.is_file():
        raise GeneratorError(f"diffusers folder {folder}: {path.name} missing (looked for {path})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GeneratorError(f"diffusers folder {folder}: {path} is not readable JSON: {e}") from e
    if not isinstance(raw, dict):
        raise GeneratorError(f"diffusers folder {folder}: {path} is not a JSON object")
    return raw


def weights_file(component: Path, folder: Path, name: str = WEIGHTS_NAME) -> Path:
    """The safetensors weights of `component` (a sub-folder of `folder`); pickles are refused."""
    weights = component / name
    if not weights.is_file():
        pickled = component / (name.removesuffix(".safetensors") + ".bin")
        note = f" (found only pickled {pickled.name}, which is refused)" if pickled.exists() else ""
        raise GeneratorError(f"diffusers folder {folder}: {name} missing in {component}{note}")
    return weights


def component_config(component: Path, folder: Path, classes: tuple[str, ...]) -> dict[str, Any]:
    """`component`'s config.json, refused unless its _class_name is one of `classes`."""
    config = read_json(component / CONFIG_NAME, folder)
    name = config.get("_class_name", classes[0])
    if name not in classes:
        raise GeneratorError(f"diffusers folder {folder}: {component / CONFIG_NAME} describes a "
                             f"{name}, expected {' or '.join(classes)}")
    return config


def load_component(cls: type, component: Path, folder: Path):
    """`cls.from_pretrained` on a local component folder, safetensors only; load errors named."""
    try:
        # Initial weights are overwritten; the fixed seed only keeps construction off the global RNG.
        with isolated_rng(0):
            return cls.from_pretrained(component, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as e:
        raise GeneratorError(f"diffusers folder {folder}: {component.name}/ could not be loaded: {e}") from e


def weights_sha256(folder: Path, files: list[Path]) -> str:
    """One digest for a model of several weights files: sha256 over "relative path <TAB> file
    sha256" lines in path order, so renaming, swapping or changing any file changes it."""
    lines = sorted(f"{f.relative_to(folder).as_posix()}\t{sha256_file(f)}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()
