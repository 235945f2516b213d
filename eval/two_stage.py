"""Khoo et al.'s two-stage training (eval/models/khoo.py), run by `python -m eval.train --model
khoo` as one command.

    stage 1, RUN/primary/: the primary real/fake detector alone (model.primary), binary cross
        entropy against "is fake", at optim.lr; its own last/best checkpoints, metrics.csv and
        curves.png (val_acc there is detection accuracy).
    stage 2, RUN/: the primary loaded from RUN/primary's `best` checkpoint and frozen (no
        gradient, BatchNorm in eval mode), the secondary modules trained one-vs-all at
        model.options.secondary_lr; RUN's last/best hold the whole model, so eval.predict and
        eval.attack read RUN as any other run.

Both stages use the config's epochs, batch size and early stopping (the released code trains
each with the same --epochs and --early_stopping). --resume continues whichever stage was
interrupted: stage 1 from RUN/primary/last, or stage 2 from RUN/last; a stage-2 start repeats
exactly (the torch seed is reset to the config's seed before it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from eval import distributed, run_files
from eval.models import khoo
from eval.train import EarlyStopping, Runtime, TrainParts, fit
from eval.train_config import TrainConfig


def _is_fake(batches: Iterable[dict]) -> Iterator[dict]:
    """Batches with their class labels replaced by 1 for fake, 0 for real (stage 1's target)."""
    for batch in batches:
        yield {**batch, "label": (batch["label"] > 0).long()}


def primary_parts(parts: TrainParts) -> TrainParts:
    """Stage 1: the primary detector on real/fake labels."""
    model = parts.model
    return dataclasses.replace(
        parts, model=model.primary, loss=khoo.primary_loss,
        train_batches=lambda epoch: _is_fake(parts.train_batches(epoch)),
        val_batches=lambda: _is_fake(parts.val_batches()))


def secondary_config(cfg: TrainConfig) -> TrainConfig:
    """Stage 2's config: the secondary modules' learning rate."""
    lr = khoo.parse(cfg.model.options).secondary_lr
    return cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"lr": lr})})


def start_secondary(model: khoo.Khoo, primary_run: Path) -> dict:
    """Load the primary's best weights, copy them into the branches where asked, freeze the
    primary; what was loaded, for the sidecars."""
    ckpt = run_files.load_checkpoint(primary_run, run_files.BEST)
    model.primary.load_state_dict(ckpt.weights)
    if model.options.branch_init == "primary":
        model.branches_from_primary()
    model.freeze_primary()
    return {"epoch": ckpt.epoch, "weights_sha256": ckpt.sidecar["weights_sha256"]}


def fit_two_stage(run: Path, cfg: TrainConfig, parts: TrainParts, info: dict, rt: Runtime,
                  resume: bool = False) -> EarlyStopping:
    """Stage 1 into RUN/primary, then stage 2 into RUN; returns stage 2's early stopping."""
    run = Path(run)
    model = parts.model
    if not isinstance(model, khoo.Khoo):
        raise TypeError(f"two-stage training needs a khoo model, not {type(model).__name__}")
    primary_run = run / run_files.PRIMARY
    stage2 = {**info, "stage": "secondary"}
    if resume and (run / f"{run_files.LAST}.json").is_file():  # stage 2 was under way
        stage2["primary"] = start_secondary(model, primary_run)
        return fit(run, secondary_config(cfg), parts, stage2, rt, resume=True)
    primary_run.mkdir(parents=True, exist_ok=True)
    fit(primary_run, cfg, primary_parts(parts), {**info, "stage": "primary"}, rt,
        resume=resume and (primary_run / f"{run_files.LAST}.json").is_file())
    distributed.barrier(rt.world_size)  # rank 0 has written the primary's best checkpoint
    stage2["primary"] = start_secondary(model, primary_run)
    torch.manual_seed(cfg.seed)  # stage 2 starts the same after a resume as straight through
    distributed.seed_ranks(cfg.seed, rt.rank, rt.world_size)  # one stream per rank, as fit's
    return fit(run, secondary_config(cfg), parts, stage2, rt)
