"""What the attribution models share: their output, their error, option parsing and reading a
local state dict (never a download, never an unpickler that can run code)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from benchmark import weights_file


class ModelError(ValueError):
    """A model name, option or weights file that cannot be used; the message names it."""


@dataclass
class ModelOutput:
    """What every model's forward returns.

    logits: (B, C) final class logits, class 0 real (RepMix: the gated attribution logits;
        Khoo et al.: a constant 0 for real beside each source branch's logit).
    embedding: (B, D) the representation the logits are read from (RepMix: the 256-d fc output;
        Yu et al.: the 512-d fingerprint; DCT-CNN: the flattened last feature map; Khoo et al.:
        the primary detector's pooled last feature map).
    detection: (B, 2) detection logits (real, fake): RepMix's detection head; for Khoo et al.
        (0, z) with z the primary detector's single logit, so softmax gives its sigmoid; None
        for the other models.
    """

    logits: Tensor
    embedding: Tensor
    detection: Tensor | None = None


def parse_options(name: str, cls: type, options: Mapping[str, Any] | None) -> Any:
    """A frozen options dataclass from a mapping: unknown keys are an error; int fields must be
    integers within field.metadata["range"] (inclusive); float fields numbers within
    field.metadata["real_range"] (low exclusive); str fields one of field.metadata["choices"].
    Defaults fill the rest."""
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise ModelError(f"unknown {name} options {unknown}; known: {sorted(fields)}")
    for key, value in options.items():
        meta = fields[key].metadata
        if "choices" in meta:
            if value not in meta["choices"]:
                raise ModelError(f"{name} option {key}={value!r} must be one of {list(meta['choices'])}")
        elif "real_range" in meta:  # exclusive low, inclusive high
            low, high = meta["real_range"]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value <= high:
                raise ModelError(f"{name} option {key}={value!r} must be a number in ({low}, {high}]")
            options[key] = float(value)
        else:
            low, high = meta["range"]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ModelError(f"{name} option {key}={value!r} must be an integer in [{low}, {high}]")
    return cls(**options)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a local weights file (benchmark.weights_file: never runs code)."""
    try:
        return weights_file.read_state_dict(path)
    except weights_file.WeightsFileError as exc:
        raise ModelError(f"weights file {exc.path} {exc.problem} "
                         f"(weights are only read from local files)") from exc


def check_unmixed(name: str, output: ModelOutput, labels: Tensor, mix: Tensor, columns: int) -> None:
    """A loss's inputs for a model that does not mix: labels and mix (B, 1), mix all ones,
    logits (B, columns)."""
    if labels.dim() != 2 or labels.shape[1] != 1 or mix.shape != labels.shape \
            or output.logits.shape != (labels.shape[0], columns):
        raise ModelError(f"{name} does not mix: labels and mix must be (B, 1) and logits (B, {columns}); "
                         f"got labels {tuple(labels.shape)}, mix {tuple(mix.shape)}, "
                         f"logits {tuple(output.logits.shape)}")
    if not torch.all(mix == 1):
        raise ModelError(f"{name} does not mix: mix weights must all be 1")


def cross_entropy(name: str, output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    """Mean cross entropy for a model that does not mix: labels and mix (B, 1), mix all ones."""
    check_unmixed(name, output, labels, mix, num_classes)
    return F.cross_entropy(output.logits.float(), labels[:, 0])
