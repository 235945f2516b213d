"""Save a training run's whole state every N steps, and resume it after a crash, exactly.

A run that resumes must end with the same weights as one that never stopped, so a snapshot
holds everything the future depends on: every parameter and buffer of the networks (the
non-persistent ones too, e.g. StyleGAN2's path-length mean), optimiser and learning-rate
schedule states, the run's RNG states, and the private torch.Generators some modules hold
(gradient-penalty mixing weights, style-mixing draws). The states are the exact tensors, so
only the throughput figure differs between a resumed run and an uninterrupted one.

Files: OUT.resume.safetensors (tensors) + OUT.resume.json (step, the run's fingerprint, the
non-tensor parts of optimiser states, and the sha256 of the tensors file). The JSON is written
last, so a crash between the two leaves a pair whose sha256 does not match, which is ignored.
A snapshot of another run (other settings, data or code version) is ignored too, never mixed in.
Nothing is unpickled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from benchmark.atomic import atomic_path, sha256_file, write_text

log = logging.getLogger(__name__)

FORMAT = "attribution88-training-state/1"


def module_generators(modules: Mapping[str, nn.Module]) -> dict[str, torch.Generator]:
    """Every torch.Generator held as an attribute of a (sub)module, by a stable dotted name."""
    found = {}
    for prefix, module in modules.items():
        for path, sub in module.named_modules():
            for attr, value in sorted(vars(sub).items()):
                if isinstance(value, torch.Generator):
                    found[".".join(p for p in (prefix, path, attr) if p)] = value
    return found


def _split_optimizer(name: str, state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer/scheduler state_dict as (tensors by flat key, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, key: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(value, dict):
            return {"__dict__": [[k, walk(v, f"{key}.{k}")] for k, v in value.items()]}
        if isinstance(value, (list, tuple)):
            return [walk(v, f"{key}.{i}") for i, v in enumerate(value)]
        return value

    return tensors, walk(state, name)


def _join_optimizer(layout: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(layout, dict) and "__tensor__" in layout:
        return tensors[layout["__tensor__"]]
    if isinstance(layout, dict) and "__dict__" in layout:
        return {k: _join_optimizer(v, tensors) for k, v in layout["__dict__"]}
    if isinstance(layout, list):
        return [_join_optimizer(v, tensors) for v in layout]
    return layout


class TrainingState:
    """Snapshots of one run at OUT.resume.*; `fingerprint` names the run (settings, data, code)."""

    def __init__(self, out: Path | str, fingerprint: Mapping[str, Any], every: int):
        out = Path(out)
        if out.suffix in (".safetensors", ".json"):
            out = out.with_suffix("")
        self.tensors_path = out.with_name(out.name + ".resume.safetensors")
        self.meta_path = out.with_name(out.name + ".resume.json")
        self.fingerprint = json.loads(json.dumps(dict(fingerprint), sort_keys=True))
        self.every = every  # save after every this many steps (0: never)

    def due(self, step: int, steps: int) -> bool:
        return self.every > 0 and step % self.every == 0 and step < steps

    def save(self, step: int, modules: Mapping[str, nn.Module], optimizers: Mapping[str, Any],
             rngs: Mapping[str, torch.Tensor]) -> None:
        """Snapshot after `step` steps; `optimizers` holds anything with state_dict() (also LR schedules)."""
        tensors: dict[str, torch.Tensor] = {}
        for name, module in modules.items():
            for key, value in [*module.named_parameters(), *module.named_buffers()]:
                tensors[f"module.{name}.{key}"] = value.detach().cpu().contiguous().clone()
        for name, gen in module_generators(modules).items():
            tensors[f"modrng.{name}"] = gen.get_state()
        for name, state in rngs.items():
            tensors[f"rng.{name}"] = state.clone()
        layouts = {}
        for name, opt in optimizers.items():
            opt_tensors, layouts[name] = _split_optimizer(f"opt.{name}", opt.state_dict())
            tensors.update(opt_tensors)
        self.tensors_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.tensors_path) as tmp:
            save_file(tensors, str(tmp))
        meta = {"format": FORMAT, "step": step, "fingerprint": self.fingerprint, "optimizers": layouts,
                "sha256": sha256_file(self.tensors_path)}
        write_text(self.meta_path, json.dumps(meta, sort_keys=True) + "\n")
        log.info("saved training state at step %d to %s", step, self.tensors_path)

    def restore(self, modules: Mapping[str, nn.Module], optimizers: Mapping[str, Any],
                rngs: Mapping[str, None]) -> tuple[int, dict[str, torch.Tensor]]:
        """Load the last snapshot of this run into modules and optimizers.

        Returns (steps already done, {name: RNG state} for the names in `rngs`); (0, {}) when
        there is no usable snapshot, after logging why an existing one was ignored.
        """
        if not self.meta_path.is_file() or not self.tensors_path.is_file():
            return 0, {}
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("fingerprint") != self.fingerprint:
                log.warning("ignoring %s: it belongs to another run (settings, data or version)", self.meta_path)
                return 0, {}
            if sha256_file(self.tensors_path) != meta.get("sha256"):
                log.warning("ignoring %s: its tensors file does not match (interrupted save?)", self.meta_path)
                return 0, {}
            tensors = load_file(str(self.tensors_path))
        except (OSError, ValueError, SafetensorError) as e:
            log.warning("ignoring unreadable training state %s: %s", self.meta_path, e)
            return 0, {}
        with torch.no_grad():
            for name, module in modules.items():
                for key, value in [*module.named_parameters(), *module.named_buffers()]:
                    value.copy_(tensors[f"module.{name}.{key}"])
        for name, gen in module_generators(modules).items():
            gen.set_state(tensors[f"modrng.{name}"])
        for name, opt in optimizers.items():
            opt.load_state_dict(_join_optimizer(meta["optimizers"][name], tensors))
        step = int(meta["step"])
        log.info("resuming from step %d (%s)", step, self.tensors_path)
        return step, {name: tensors[f"rng.{name}"] for name in rngs}

    def clear(self) -> None:
        """Remove the snapshot once the run has finished (its result is the checkpoint)."""
        self.meta_path.unlink(missing_ok=True)
        self.tensors_path.unlink(missing_ok=True)
