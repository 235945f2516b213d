"""Generator checkpoints: NAME.safetensors (the generator's state_dict, nothing else) + NAME.json.

The sidecar says what the weights are:

    {"format": "attribution88-generator/1", "arch": "sngan", "resolution": 128,
     "options": {"ch": 64, "dim_z": 128}, "train": {...} | null, "sha256": "<of NAME.safetensors>"}

Weights are read with safetensors only, never unpickled, so a checkpoint from elsewhere cannot
run code. Every way a checkpoint can be wrong raises GeneratorError naming the file. Files in
other projects' formats (.pt/.pth/.pkl) are handed to generators.external.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from benchmark.atomic import atomic_path, sha256_file, write_text
from generators import external
from generators.base import GeneratorError, NetworkFamily, NetworkGenerator, isolated_rng

FORMAT = "attribution88-generator/1"
# Mismatch reports list this many keys at most: enough to see the pattern, short enough to read.
_MAX_LISTED = 5


@dataclasses.dataclass(frozen=True)
class CheckpointPaths:
    """The files that make up (or accompany) one checkpoint."""

    weights: Path  # NAME.safetensors
    sidecar: Path  # NAME.json
    grid: Path  # NAME.grid.png, the sample grid written after training


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """The validated contents of a sidecar."""

    arch: str
    resolution: int
    options: dict[str, Any]
    train: dict[str, Any] | None
    sha256: str


def checkpoint_paths(path: Path | str) -> CheckpointPaths:
    """Paths for a checkpoint given as its stem, its .safetensors file or its .json sidecar."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return CheckpointPaths(weights=path.with_name(path.name + ".safetensors"),
                           sidecar=path.with_name(path.name + ".json"),
                           grid=path.with_name(path.name + ".grid.png"))


def save_checkpoint(path: Path | str, net: nn.Module, *, arch: str, resolution: int,
                    options: Mapping[str, Any], train: Mapping[str, Any] | None,
                    converted_from: Mapping[str, Any] | None = None) -> CheckpointPaths:
    """Write net's state_dict and its sidecar; returns the paths written.

    `converted_from` records where converted weights came from (another project's file).
    """
    paths = checkpoint_paths(path)
    paths.weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(paths.weights) as tmp:
        save_file(state, str(tmp))
    meta = {
        "format": FORMAT,
        "arch": arch,
        "resolution": resolution,
        "options": dict(options),
        "train": None if train is None else dict(train),
        "sha256": sha256_file(paths.weights),
    }
    if converted_from is not None:
        meta["converted_from"] = dict(converted_from)
    text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    write_text(paths.sidecar, text)
    return paths


def read_meta(path: Path | str) -> CheckpointMeta:
    """Parse and validate a checkpoint's sidecar (the weights file is not opened)."""
    paths = checkpoint_paths(path)
    if not paths.sidecar.is_file():
        raise GeneratorError(f"checkpoint sidecar {paths.sidecar} does not exist")
    try:
        raw = json.loads(paths.sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GeneratorError(f"checkpoint sidecar {paths.sidecar} is not readable JSON: {e}") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise GeneratorError(f"checkpoint sidecar {paths.sidecar} has format {found!r}, expected {FORMAT!r}")
    expected = {"arch": str, "resolution": int, "options": dict, "sha256": str}
    for key, kind in expected.items():
        if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
            raise GeneratorError(f"checkpoint sidecar {paths.sidecar}: field {key!r} missing "
                                 f"or not {kind.__name__}")
    if raw.get("train") is not None and not isinstance(raw["train"], dict):
        raise GeneratorError(f"checkpoint sidecar {paths.sidecar}: field 'train' must be an object or null")
    return CheckpointMeta(arch=raw["arch"], resolution=raw["resolution"], options=raw["options"],
                          train=raw.get("train"), sha256=raw["sha256"])


def is_reusable(path: Path | str, *, arch: str, resolution: int, options: Mapping[str, Any],
                train: Mapping[str, Any]) -> bool:
    """Whether PATH holds a checkpoint whose sidecar records this arch, resolution and options
    and every setting in `train` (the sidecar's `train` block may hold more, such as `ema`).
    A missing or unreadable checkpoint is simply not reusable."""
    paths = checkpoint_paths(path)
    if not paths.weights.is_file():
        return False
    try:
        meta = read_meta(paths.sidecar)
    except GeneratorError:
        return False
    recorded = meta.train or {}
    return (meta.arch == arch and meta.resolution == resolution and meta.options == dict(options)
            and all(recorded.get(k) == v for k, v in train.items()))


def recorded_options(path: Path | str) -> dict[str, Any] | None:
    """A network's options (sampling ones such as truncation_psi included) from its sidecar;
    None for another project's file or a weights file without a sidecar."""
    if external.is_external(path):
        return None
    paths = checkpoint_paths(path)
    if not paths.sidecar.is_file():
        return None
    return read_meta(paths.sidecar).options


def check_state_dict(source: str, expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                     target: str = "the model its sidecar describes") -> None:
    """Raise GeneratorError naming missing, unexpected, misshapen and non-finite keys of `found`
    (from `source`)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(f"{k} {tuple(found[k].shape)} != {tuple(expected[k].shape)}"
                   for k in set(expected) & set(found) if found[k].shape != expected[k].shape)
    # A diverged training run saves NaN/inf weights that load fine and sample black or noise.
    broken = sorted(k for k, v in found.items()
                    if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()))
    problems = [f"{label}: {items[:_MAX_LISTED]}{' ...' if len(items) > _MAX_LISTED else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (file != model)", wrong),
                                     ("NaN or infinite values in", broken)) if items]
    if problems:
        raise GeneratorError(f"{source} does not fit {target}; " + "; ".join(problems))


def load_network(path: Path | str, family: NetworkFamily, *, resolution: int,
                 device: str = "cpu", trust_pickle: bool = False) -> NetworkGenerator:
    """Build the network `family` describes and fill it from a checkpoint, checking everything on the way.

    A path ending in .pt/.pth/.pkl is another project's format and goes to generators.external
    (trust_pickle is only consulted there, for NVIDIA pickles).
    """
    if external.is_external(path):
        return external.load_external(path, family, resolution=resolution, device=device,
                                      trust_pickle=trust_pickle)
    paths = checkpoint_paths(path)
    if not paths.weights.is_file():
        raise GeneratorError(f"checkpoint weights file {paths.weights} does not exist")
    meta = read_meta(paths.sidecar)
    if meta.arch != family.NAME:
        raise GeneratorError(f"checkpoint {paths.sidecar} is for arch {meta.arch!r}, not {family.NAME!r}")
    if meta.resolution != resolution:
        raise GeneratorError(f"checkpoint {paths.sidecar} is for resolution {meta.resolution}, "
                             f"not the requested {resolution}")
    if meta.resolution not in family.RESOLUTIONS:
        raise GeneratorError(f"checkpoint {paths.sidecar}: {family.NAME} does not support "
                             f"resolution {meta.resolution}")
    actual = sha256_file(paths.weights)
    if actual != meta.sha256:
        raise GeneratorError(f"checkpoint {paths.weights} does not match its sidecar {paths.sidecar}: "
                             f"sha256 {actual} != {meta.sha256} (wrong pairing or corrupt file)")
    try:
        options = family.parse_options(meta.options)
    except GeneratorError as e:
        raise GeneratorError(f"checkpoint {paths.sidecar}: {e}") from e
    try:
        state = load_file(str(paths.weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise GeneratorError(f"checkpoint {paths.weights} is not a readable safetensors file: {e}") from e
    # The initial weights are overwritten; the fixed seed only keeps construction off the global RNG.
    with isolated_rng(0):
        net = family.build_generator(meta.resolution, options)
    check_state_dict(f"checkpoint {paths.weights}", net.state_dict(), state)
    net.load_state_dict(state, strict=True)
    return NetworkGenerator(family.NAME, net, meta.resolution, meta.sha256, device,
                            options=family.options_dict(options))
