"""Attribution models trained on a benchmark: RepMix (Bui et al. 2022), Yu et al. 2019's
classifier, Frank et al. 2020's DCT-CNN and Khoo et al. 2022's decentralised attribution, one
module each (structure only, no training loop).

An explicit registry: each module provides NAME, INPUT_KIND, MIXES, TRAIN_DEFAULTS (the
optimiser, scheduler and stopping settings of its paper or released code; keys: optimizer, lr,
betas, eps, weight_decay, step_gamma (None: constant lr), max_epochs, batch_size, early_stop
("val_acc" | "val_loss"), patience, validate_every, and for RepMix early_stop_released),
parse(options) -> a frozen options dataclass, build(num_classes, options, weights) and
loss(output, labels, mix, num_classes).

A module may also define TWO_STAGE = True (khoo: eval.train runs eval.two_stage) and a model
may define submission_scores(output) (khoo: sigmoids and its decision rule; `read_submission`
falls back to softmax scores otherwise).

Options: repmix {arch: resnet50 | resnet18, embed_dim: 256, mixup_level: 5}; yu {resolution: 128,
fmap_base: 1024, fmap_max: 512}; dct {resolution: 128}; khoo {arch: resnet50 | resnet18,
branch_after: layer1 | layer2 | layer3 | layer4 (default layer3), branch_init: fresh | primary,
secondary_lr: 1e-4}. The "stored"-input models (yu, dct) are
built for one input size, so the trainer passes the benchmark's resolution as
options["resolution"].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from eval.models import dct, khoo, repmix, yu
from eval.models.common import ModelError, ModelOutput
from eval.models.dct import fit_input_statistics

MODELS = ("repmix", "yu", "dct", "khoo")
_MODULES: dict[str, ModuleType] = {"repmix": repmix, "yu": yu, "dct": dct, "khoo": khoo}

__all__ = ["MODELS", "ModelError", "ModelOutput", "build_model", "fit_input_statistics", "input_kind",
           "loss", "mixes", "read_submission", "resolved_options", "train_defaults", "two_stage"]


def _module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise ModelError(f"unknown model {name!r}; known models: {list(MODELS)}")
    return _MODULES[name]


def build_model(name: str, num_classes: int, *, options: Mapping[str, Any] | None = None,
                weights: Path | None = None) -> nn.Module:
    """A freshly initialised model; `weights` is a local backbone state dict (repmix and khoo
    only: an ImageNet torchvision ResNet file), never a download. Unknown names and options are errors."""
    return _module(name).build(num_classes, options, weights)


def resolved_options(name: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options with defaults filled in, for the run's sidecar."""
    return dataclasses.asdict(_module(name).parse(options))


def loss(name: str, output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    """The training loss: repmix's compound loss; cross entropy for yu and dct (labels, mix (B, 1));
    khoo's stage-2 one-vs-all loss (its stage-1 loss is khoo.primary_loss)."""
    return _module(name).loss(output, labels, mix, num_classes)


def input_kind(name: str) -> str:
    """ "resized" (repmix, khoo: resize 256, crop 224 in training, resize 224 for evaluation) or
    "stored" (yu, dct: the stored image size)."""
    return _module(name).INPUT_KIND


def mixes(name: str) -> int:
    """Images per training example: 2 for repmix (the released setting), 1 for the others."""
    return _module(name).MIXES


def train_defaults(name: str) -> dict[str, Any]:
    """A copy of the model's TRAIN_DEFAULTS."""
    return dict(_module(name).TRAIN_DEFAULTS)


def two_stage(name: str) -> bool:
    """Whether eval.train trains the model in two stages (khoo: primary, then secondary)."""
    return bool(getattr(_module(name), "TWO_STAGE", False))


def read_submission(model: nn.Module, output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """(scores (B, C), fake_score (B,), pred (B,)) of a submission, on the CPU, from a forward's
    output: the model's own `submission_scores` where it has one (khoo); otherwise the softmax
    of the final logits, the detection head's softmax p_fake (or 1 - score_real without one)
    and the argmax."""
    hook = getattr(model, "submission_scores", None)
    if hook is not None:
        scores, fake, pred = hook(output)
        return scores.cpu(), fake.cpu(), pred.cpu()
    scores = torch.softmax(output.logits.float(), dim=1).cpu()
    if output.detection is not None:
        fake = torch.softmax(output.detection.float(), dim=1)[:, 1].cpu()
    else:
        fake = 1.0 - scores[:, 0]
    return scores, fake, scores.argmax(1)
