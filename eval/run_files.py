"""The files of a training run, written atomically; nothing in them is ever unpickled.

    RUN/config.json                  the resolved training config (eval/train_config.py)
    RUN/run.json                     what the run was trained on: model, classes, the benchmark's
                                     manifest sha256, the backbone weights file and its sha256
                                     (or "scratch")
    RUN/checkpoints/eNNNN.safetensors            the model's state dict after epoch NNNN
    RUN/checkpoints/eNNNN.state.safetensors      the tensors of the training state (optimiser
                                     moments, RNG states) after epoch NNNN
    RUN/last.json, RUN/best.json     sidecars: model, options, benchmark manifest sha256, epoch,
                                     metrics, the weights file (and for `last` the state file)
                                     with their sha256, and for `last` the JSON part of the
                                     training state (optimiser param groups and step counts,
                                     scheduler, early stopping, metric history)
    RUN/metrics.csv, RUN/curves.png  one row per epoch, and its plot
    RUN/primary/                     two-stage models (khoo, eval/two_stage.py) only: stage 1's
                                     checkpoints, metrics and curves (the primary detector);
                                     RUN's own files are then stage 2's, the whole model

The training state is split into plain tensors (stored with safetensors) and everything else
(stored as JSON, with tensor positions marked), so loading it runs no pickle. Each epoch writes
its two tensor files under new names first, then the sidecar atomically: the sidecar is the
commit point, so a crash leaves the previous epoch's checkpoint whole, and files no sidecar
names are removed afterwards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from benchmark.atomic import atomic_path, sha256_file, write_text

CONFIG = "config.json"
RUN_INFO = "run.json"
CHECKPOINTS = "checkpoints"
LAST = "last"
BEST = "best"
METRICS = "metrics.csv"
CURVES = "curves.png"
PRIMARY = "primary"  # stage 1 of a two-stage run


class RunError(ValueError):
    """A run folder that cannot be used as asked; the message names the file."""


@dataclass(frozen=True)
class Checkpoint:
    epoch: int
    weights: dict[str, torch.Tensor]  # the model's state dict, on the CPU
    sidecar: dict  # the JSON sidecar as written
    state: dict | None  # the training state (last only), tensors restored


def _split_tensors(obj: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """JSON-able copy of `obj` with each tensor replaced by {"__tensor__": name}."""
    if isinstance(obj, torch.Tensor):
        name = path or "root"
        tensors[name] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _split_tensors(v, tensors, f"{path}.{k}" if path else k) for k, v in obj.items()}
        # Non-string keys (the optimiser's parameter indices) keep their type as pairs.
        return {"__items__": [[k, _split_tensors(v, tensors, f"{path}.{k}" if path else str(k))]
                              for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [_split_tensors(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{path}: cannot store a {type(obj).__name__} in a run file")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: _join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(_join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return sha256_file(path)


def _load_tensors(run: Path, rel: str, sha256: str, sidecar: Path) -> dict[str, torch.Tensor]:
    path = run / rel
    if not path.is_file():
        raise RunError(f"{sidecar}: names {rel}, which is missing")
    if sha256_file(path) != sha256:
        raise RunError(f"{path}: sha256 differs from the one {sidecar.name} records")
    return load_file(str(path), device="cpu")


def save_checkpoint(run: Path, tag: str, epoch: int, model_state: dict[str, torch.Tensor],
                    info: dict, metrics: dict, state: dict | None = None) -> None:
    """Write `tag` (last | best): weights (+ training state) under new names, then the sidecar."""
    run = Path(run)
    weights_rel = f"{CHECKPOINTS}/e{epoch:04d}.safetensors"
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
    sidecar = {**info, "epoch": epoch, "metrics": metrics, "weights": weights_rel}
    weights_path = run / weights_rel
    # best and last of one epoch share the weights file (same content, written again).
    sidecar["weights_sha256"] = _save_tensors(weights, weights_path)
    if state is not None:
        tensors: dict[str, torch.Tensor] = {}
        sidecar["training_state"] = _split_tensors(state, tensors)
        state_rel = f"{CHECKPOINTS}/e{epoch:04d}.state.safetensors"
        sidecar["state"] = state_rel
        sidecar["state_sha256"] = _save_tensors(tensors, run / state_rel)
    write_text(run / f"{tag}.json", json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    _prune(run)


def _prune(run: Path) -> None:
    """Remove checkpoint files that no sidecar names (older epochs, leftovers of a crash)."""
    named = set()
    for tag in (LAST, BEST):
        path = run / f"{tag}.json"
        if path.is_file():
            sidecar = json.loads(path.read_text())
            named.update(sidecar.get(k) for k in ("weights", "state") if sidecar.get(k))
    for path in (run / CHECKPOINTS).glob("*.safetensors"):
        if f"{CHECKPOINTS}/{path.name}" not in named:
            path.unlink()


def load_checkpoint(run: Path, tag: str, with_state: bool = False) -> Checkpoint:
    run = Path(run)
    path = run / f"{tag}.json"
    if not path.is_file():
        raise RunError(f"{path}: no {tag} checkpoint in this run")
    try:
        sidecar = json.loads(path.read_text())
        rel, sha = sidecar["weights"], sidecar["weights_sha256"]
    except (ValueError, KeyError) as exc:
        raise RunError(f"{path}: not a checkpoint sidecar ({exc})") from None
    weights = _load_tensors(run, rel, sha, path)
    state = None
    if with_state:
        if "state" not in sidecar:
            raise RunError(f"{path}: holds no training state to resume from")
        tensors = _load_tensors(run, sidecar["state"], sidecar["state_sha256"], path)
        state = _join_tensors(sidecar["training_state"], tensors)
    return Checkpoint(epoch=int(sidecar["epoch"]), weights=weights, sidecar=sidecar, state=state)


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise RunError(f"{path}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise RunError(f"{path}: not valid JSON ({exc})") from None
