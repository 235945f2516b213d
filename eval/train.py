"""Train an attribution model on a built benchmark: `python -m eval.train`.

    python -m eval.train --benchmark OUT --model repmix|yu|dct|khoo --out RUN [--config F]
        [--set key.path=value ...] [--resume] [--device auto|cpu|cuda]

Trains on the train split of the seen semantics and validates on their val split (the paper's
protocol; `data.seen_only: false` opens both up), stops early on `early_stop.metric`, and
writes into RUN (see eval/run_files.py): the resolved config, what the run was trained on, the
`last` and `best` checkpoints, metrics.csv and curves.png. `--resume` continues from the last
epoch boundary and ends with the same weights as an uninterrupted run (each epoch's data is
seeded by (seed, epoch), and the model, optimiser, scheduler, scaler, RNG and early-stopping
states are restored). An existing non-empty RUN without --resume is refused. khoo trains in
two stages from the one command (eval/two_stage.py: the primary detector into RUN/primary,
then the secondary modules into RUN).

A bad config, benchmark or run folder exits with code 2 and a message naming the file and key;
nothing is written.

Several GPUs (or CPU processes): `python -m torch.distributed.run --nproc_per_node N -m
eval.train ...` trains with DistributedDataParallel (eval/distributed.py); `data.batch_size` is
per process, the ranks split each epoch's samples (eval/data.py), and rank 0 alone writes the
run folder and logs. run.json records world_size; --resume needs the same one.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from tqdm import tqdm

from benchmark.atomic import sha256_file, write_bytes, write_text
from benchmark.command_line import command_parser
from benchmark.config import ConfigError
from eval import data, device_corruption, distributed, models, run_files
from eval.benchmark_folder import BenchmarkError, BenchmarkFolder, open_benchmark
from eval.models import ModelError
from eval.run_files import RunError
from eval.train_config import SCRATCH, TrainConfig, config_from_json, load_train_config

PROG = "python -m eval.train"  # the name in --help; a88 passes its own

METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_det_acc", "lr",
                  "seconds", "images_per_s")


@dataclass
class TrainParts:
    """What the loop needs from the model and data modules (tests pass stand-ins)."""
    model: nn.Module
    # (output, labels (B, K), mix (B, K)) -> scalar loss; output has .logits (B, C)
    loss: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor]
    train_batches: Callable[[int], Iterable[dict]]  # epoch -> {"image" (B,K,3,H,W), "label", "mix"}
    val_batches: Callable[[], Iterable[dict]]  # -> {"image" (B,3,H,W), "label" (B,)}
    train_count: int  # examples per epoch (progress and ETA)
    mixing: bool  # the model takes (B, K, 3, H, W) + mix in training (RepMix)
    images_per_example: int = 1  # K



class EarlyStopping:
    """Stop after `patience` validations without improving `metric` by more than `min_delta`."""

    def __init__(self, metric: str, patience: int, min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.higher_is_better = metric.endswith("acc")
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_checks = 0
        self.stopped_epoch: int | None = None

    def update(self, epoch: int, value: float) -> bool:
        """Record one validation; True when it is the best so far."""
        if self.best is None:
            gain = math.inf
        else:
            gain = value - self.best if self.higher_is_better else self.best - value
        if gain > self.min_delta:
            self.best, self.best_epoch, self.bad_checks = value, epoch, 0
            return True
        self.bad_checks += 1
        if self.bad_checks >= self.patience:
            self.stopped_epoch = epoch
        return False

    def state_dict(self) -> dict:
        return {"metric": self.metric, "patience": self.patience, "min_delta": self.min_delta,
                "best": self.best, "best_epoch": self.best_epoch, "bad_checks": self.bad_checks,
                "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.bad_checks, self.stopped_epoch = state["bad_checks"], state["stopped_epoch"]


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype on CUDA, None for fp32
    channels_last: bool
    rank: int = 0  # this process among world_size (torchrun); rank 0 writes files and logs
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def select_runtime(cfg: TrainConfig, device: str | None = None,
                   ranks: distributed.Ranks = distributed.Ranks()) -> Runtime:
    """The device (auto: CUDA when there is one; under torchrun GPU LOCAL_RANK), AMP dtype and
    memory format."""
    want = device or cfg.runtime.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError(["--device cuda: no CUDA device is available"])
    use_cuda = want == "cuda" or (want == "auto" and torch.cuda.is_available())
    where = {"rank": ranks.rank, "world_size": ranks.world_size}
    if not use_cuda:
        return Runtime(torch.device("cpu"), None, False, **where)
    amp = cfg.runtime.amp
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    gpu = torch.device("cuda", ranks.local_rank) if ranks.world_size > 1 else torch.device("cuda")
    return Runtime(gpu, dtype, cfg.runtime.channels_last, **where)


def _to_device(images: torch.Tensor, rt: Runtime) -> torch.Tensor:
    images = images.to(rt.device, non_blocking=True)
    if rt.channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def _forward(model: nn.Module, batch: dict, rt: Runtime, mixing: bool) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Training forward: (output, labels (B, K), mix (B, K))."""
    images = device_corruption.apply_recorded(batch["image"].to(rt.device, non_blocking=True),
                                              batch.get("device_corruption"))
    labels = batch["label"].to(rt.device)
    mix = batch["mix"].to(rt.device, dtype=torch.float32)
    if mixing:
        output = model(images, mix)
    else:
        output = model(_to_device(images[:, 0], rt))
    return output, labels, mix


def train_one_epoch(model: nn.Module, parts: TrainParts, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, rt: Runtime, cfg: TrainConfig, epoch: int) -> dict:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    images = 0  # examples x K (a RepMix pair is two images)
    # rank 0's share of the epoch (eval.data: each rank about train_count / world_size)
    bar = tqdm(total=parts.train_count // rt.world_size * parts.images_per_example, unit="img",
               desc=f"epoch {epoch}", disable=not (cfg.runtime.progress and rt.is_main),
               dynamic_ncols=True, leave=False)
    for batch in parts.train_batches(epoch):
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32,
                            enabled=rt.amp_dtype is not None):
            output, labels, mix = _forward(model, batch, rt, parts.mixing)
            loss = parts.loss(output, labels, mix)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        n = labels.shape[0]
        # A mixed example counts as correct when the prediction is its dominant component.
        target = labels.gather(1, mix.argmax(1, keepdim=True)).squeeze(1)
        correct += int((output.logits.argmax(1) == target).sum())
        total_loss += float(loss.detach()) * n
        seen += n
        images += labels.numel()
        bar.update(labels.numel())
        bar.set_postfix(loss=f"{total_loss / seen:.4f}")
    bar.close()
    seconds = time.perf_counter() - start
    # every rank's sums: the epoch's metrics over all its examples, images/s of all ranks
    total_loss, correct, seen, images = distributed.sum_across(
        [total_loss, correct, seen, images], rt.world_size)
    if seen == 0:
        raise RunError(f"epoch {epoch}: the training data yielded no batch")
    return {"train_loss": total_loss / seen, "train_acc": correct / seen,
            "images_per_s": images / seconds if seconds > 0 else 0.0}


@torch.no_grad()
def evaluate(model: nn.Module, parts: TrainParts, rt: Runtime) -> dict:
    """Val loss, attribution accuracy and detection accuracy (argmax is not real, vs truth)."""
    model.eval()
    total_loss, correct, det_correct, seen = 0.0, 0, 0, 0
    for batch in parts.val_batches():
        labels = batch["label"].to(rt.device)
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32,
                            enabled=rt.amp_dtype is not None):
            output = model(_to_device(batch["image"], rt))
            loss = parts.loss(output, labels[:, None], torch.ones(len(labels), 1, device=rt.device))
        pred = output.logits.float().argmax(1)
        n = len(labels)
        total_loss += float(loss) * n
        correct += int((pred == labels).sum())
        det_correct += int(((pred != 0) == (labels != 0)).sum())
        seen += n
    total_loss, correct, det_correct, seen = distributed.sum_across(
        [total_loss, correct, det_correct, seen], rt.world_size)
    if seen == 0:
        raise RunError("validation: the val data yielded no batch")
    return {"val_loss": total_loss / seen, "val_acc": correct / seen, "val_det_acc": det_correct / seen}


def write_metrics(run: Path, history: list[dict], title: str = "", best_epoch: int | None = None) -> None:
    """metrics.csv (one row per epoch; val columns empty when not validated) and curves.png."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
    write_text(run / run_files.METRICS, buf.getvalue())
    write_bytes(run / run_files.CURVES, plot_curves(history, title, best_epoch))


def plot_curves(history: list[dict], title: str = "", best_epoch: int | None = None) -> bytes:
    """Loss and accuracy per epoch; `title` names the run, and a dashed line at `best_epoch`
    shows which epoch the `best` checkpoint holds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    if title:
        fig.suptitle(title)
    for ax, keys, panel in ((ax_loss, ("train_loss", "val_loss"), "loss"),
                            (ax_acc, ("train_acc", "val_acc", "val_det_acc"), "accuracy")):
        for key in keys:
            points = [(r["epoch"], r[key]) for r in history if r.get(key) is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best checkpoint")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel)
        ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return out.getvalue()


def fit(run: Path, cfg: TrainConfig, parts: TrainParts, info: dict, rt: Runtime,
        resume: bool = False) -> EarlyStopping:
    """The training loop; `info` (model, benchmark identity, backbone) goes into every sidecar.
    On several ranks every rank calls it; rank 0 alone writes files and logs."""
    run = Path(run)
    model = distributed.sync_batchnorm(parts.model, rt.device, rt.world_size).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                 eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    scheduler = (torch.optim.lr_scheduler.StepLR(optimizer, cfg.optim.step_size, cfg.optim.gamma)
                 if cfg.optim.scheduler == "step" else None)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    stopper = EarlyStopping(cfg.early_stop.metric, cfg.early_stop.patience, cfg.early_stop.min_delta)
    history: list[dict] = []
    start_epoch = 1

    if resume:
        ckpt = run_files.load_checkpoint(run, run_files.LAST, with_state=True)
        model.load_state_dict(ckpt.weights)
        optimizer.load_state_dict(ckpt.state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt.state["scheduler"])
        scaler.load_state_dict(ckpt.state["scaler"])
        stopper.load_state_dict(ckpt.state["early_stop"])
        distributed.restore_rng(ckpt.state["rng"], rt.device, rt.rank, rt.world_size)
        history = list(ckpt.state["history"])
        start_epoch = ckpt.epoch + 1
    else:
        distributed.seed_ranks(cfg.seed, rt.rank, rt.world_size)
    if stopper.stopped_epoch is not None or start_epoch > cfg.optim.epochs:
        if rt.is_main:
            print(f"{run}: finished at epoch {start_epoch - 1}; nothing to resume", file=sys.stderr)
        return stopper
    net = distributed.wrap(model, rt.device, rt.world_size)  # trains; `model` is saved

    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        start = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        row: dict = {"epoch": epoch, "lr": lr, **train_one_epoch(net, parts, optimizer, scaler, rt, cfg, epoch)}
        if scheduler is not None:
            scheduler.step()
        validate = epoch % cfg.early_stop.validate_every == 0 or epoch == cfg.optim.epochs
        improved = False
        if validate:
            distributed.sync_buffers(model, rt.world_size)
            row.update(distributed.from_main(evaluate(model, parts, rt), rt.world_size))
            improved = stopper.update(epoch, row[cfg.early_stop.metric])
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        metrics = {k: row.get(k) for k in METRIC_COLUMNS if k != "epoch"}
        rng = distributed.rng_state(rt.device, rt.world_size)  # every rank's, gathered
        if not rt.is_main:  # the other ranks write nothing; they stop when rank 0 does
            if stopper.stopped_epoch is not None:
                break
            continue
        if improved:
            run_files.save_checkpoint(run, run_files.BEST, epoch, model.state_dict(), info, metrics)
        state = {"optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "scaler": scaler.state_dict(), "early_stop": stopper.state_dict(),
                 "rng": rng, "history": history}
        run_files.save_checkpoint(run, run_files.LAST, epoch, model.state_dict(), info, metrics, state)
        write_metrics(run, history, f"{info['model']}: {run.name}", stopper.best_epoch)
        shown = ", ".join(f"{k} {row[k]:.4g}" for k in METRIC_COLUMNS[1:] if row.get(k) is not None)
        print(f"epoch {epoch}: {shown}", file=sys.stderr)
        if stopper.stopped_epoch is not None:
            print(f"early stop at epoch {epoch}: {stopper.metric} best {stopper.best:.4g} at epoch "
                  f"{stopper.best_epoch}, no improvement in {stopper.patience} validations",
                  file=sys.stderr)
            break
    return stopper


# --- the command: everything is checked before the first file is written ---

def check_run_folder(run: Path, resume: bool) -> None:
    if resume:
        # a two-stage run (khoo) may have stopped in stage 1, before RUN's own first checkpoint
        if not any((folder / f"{run_files.LAST}.json").is_file() for folder in (run, run / run_files.PRIMARY)):
            raise RunError(f"{run}: --resume, but there is no {run_files.LAST}.json checkpoint to "
                           f"resume from")
    elif run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise RunError(f"{run}: exists and is not empty; pass --resume to continue it, or choose "
                       f"another --out")


def check_world_size(run: Path, world_size: int) -> None:
    """A resumed run continues as the uninterrupted one would only with the same world size (the
    global batch and each rank's share of the data depend on it); run.json of runs from before
    multi-process training records none: one process."""
    recorded = int(run_files.read_json(run / run_files.RUN_INFO).get("world_size", 1))
    if recorded != world_size:
        raise RunError(f"{run / run_files.RUN_INFO}: the run trained on {recorded} process(es), "
                       f"this is {world_size}; resume with torchrun --nproc_per_node {recorded}"
                       f"{' (or without torchrun)' if recorded == 1 else ''}")


def backbone_record(cfg: TrainConfig) -> dict:
    weights = cfg.model.backbone_weights
    if weights == SCRATCH:
        return {"backbone_weights": SCRATCH, "backbone_sha256": SCRATCH}
    return {"backbone_weights": str(weights), "backbone_sha256": sha256_file(weights)}


def resolve_config(args: argparse.Namespace, model_defaults: dict) -> TrainConfig:
    """The run's config: from --config/--set, or on --resume the saved one (which must match)."""
    run = Path(args.out)
    fresh = load_train_config(args.model, args.config, args.set, model_defaults=model_defaults)
    if not args.resume:
        return fresh
    saved_path = run / run_files.CONFIG
    try:
        saved = config_from_json(saved_path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{saved_path}: cannot read the run's config ({exc})") from None
    if (args.config is not None or args.set) and fresh.comparable() != saved.comparable():
        a, b = fresh.comparable(), saved.comparable()
        diff = [f"{s}.{k}" for s in a if isinstance(a[s], dict)
                for k in a[s] if a[s].get(k) != b.get(s, {}).get(k)]
        diff += [s for s in a if not isinstance(a[s], dict) and a[s] != b.get(s)]
        raise RunError(f"{saved_path}: --resume with a different config ({', '.join(diff)}); "
                       f"resume with the run's own config (leave out --config and --set)")
    if saved.model.name != args.model:
        raise RunError(f"{saved_path}: the run trains {saved.model.name}, not --model {args.model}")
    return saved


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n")[0], [
        "--benchmark out/mini --model repmix --out runs/repmix --config configs/train_mini.yaml",
        "--benchmark out/mini --model repmix --out runs/repmix --config configs/train_mini.yaml --resume"])
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--model", required=True, choices=models.MODELS)
    parser.add_argument("--out", required=True, type=Path, help="the run folder")
    parser.add_argument("--config", type=Path, help="a training config (YAML), e.g. configs/train_mini.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override one setting (repeatable), e.g. --set optim.epochs=5")
    parser.add_argument("--resume", action="store_true", help="continue RUN from its last epoch")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"),
                        help="overrides runtime.device")
    return parser.parse_args(argv)


def build_parts(cfg: TrainConfig, folder: BenchmarkFolder, rank: int = 0,
                world_size: int = 1) -> tuple[TrainParts, dict]:
    """The model (freshly initialised) and data of a run, and the model's resolved options;
    the data are rank `rank`'s share of train and val (eval.data)."""
    name, classes = cfg.model.name, len(folder.classes)
    model_mixes = models.mixes(name)
    mixes = cfg.data.mixes if cfg.data.mixes is not None else model_mixes
    if model_mixes == 1 and mixes != 1:
        raise ConfigError([f"data.mixes: {name} takes one image per example, not {mixes}"])
    kind = models.input_kind(name)
    options = dict(cfg.model.options)
    if kind == "stored":  # Yu and DCT are built for the stored size (Yu needs a power of two)
        options.setdefault("resolution", folder.resolution)
    weights = None if cfg.model.backbone_weights == SCRATCH else Path(cfg.model.backbone_weights)
    torch.manual_seed(cfg.seed)  # model initialisation; the data are seeded per (seed, epoch)
    model = models.build_model(name, classes, options=options, weights=weights)
    settings = data_settings(cfg, model_mixes)
    parts = TrainParts(
        model=model,
        loss=lambda out, labels, mix: models.loss(name, out, labels, mix, classes),
        train_batches=lambda epoch: data.train_loader(folder, settings, input_kind=kind, epoch=epoch,
                                                      rank=rank, world_size=world_size),
        val_batches=lambda: data.eval_loader(folder, "val", settings, input_kind=kind,
                                             seen_only=cfg.data.seen_only, rank=rank,
                                             world_size=world_size),
        train_count=data.train_count(folder, settings),
        mixing=mixes > 1, images_per_example=mixes)
    return parts, models.resolved_options(name, options)


def data_settings(cfg: TrainConfig, model_mixes: int) -> data.DataSettings:
    """eval.data's DataSettings from the config's data section and seed."""
    d = cfg.data
    return data.DataSettings(
        resize=d.resize, crop=d.crop, eval_size=d.eval_size, flip=d.flip,
        online_corruption=d.online_corruption, corruption_probability=d.corruption_probability,
        seen_only=d.seen_only, batch_size=d.batch_size, workers=d.workers,
        shuffle_buffer=d.shuffle_buffer, mixes=d.mixes if d.mixes is not None else model_mixes,
        mix_alpha=d.mix_alpha, seed=cfg.seed, corruption_device=d.corruption_device)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    try:
        ranks = distributed.ranks_from_env()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    distributed.init(ranks)
    try:
        return _train(args, ranks)
    finally:
        distributed.close()


def _train(args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """The command on one rank: checks on every rank, then rank 0 writes the run's first files."""
    error = None
    try:
        cfg = resolve_config(args, models.train_defaults(args.model))
        check_run_folder(args.out, args.resume)
        folder = open_benchmark(args.benchmark)
        if args.resume:
            recorded = run_files.read_json(args.out / run_files.RUN_INFO)["manifest_sha256"]
            if recorded != folder.manifest_sha256:
                raise RunError(f"{args.out / run_files.RUN_INFO}: the run trained on benchmark manifest "
                               f"sha256 {recorded}, --benchmark has {folder.manifest_sha256}")
            check_world_size(args.out, ranks.world_size)
        rt = select_runtime(cfg, args.device, ranks)
        parts, options = build_parts(cfg, folder, rt.rank, rt.world_size)
        info = {"model": cfg.model.name, "options": options, "classes": list(folder.classes),
                "benchmark": str(Path(args.benchmark).resolve()),
                "manifest_sha256": folder.manifest_sha256, **backbone_record(cfg),
                "early_stop": cfg.early_stop.model_dump(), "torch": torch.__version__,
                "device": rt.device.type, "amp": str(rt.amp_dtype).removeprefix("torch.") if rt.amp_dtype
                else "off", "channels_last": rt.channels_last, "world_size": rt.world_size}
    except (ConfigError, RunError, BenchmarkError, ModelError, ValueError) as exc:
        error = exc
    # All ranks stop if any failed (before anyone writes); the first failed one says why.
    failed = distributed.failed_ranks(ranks, error is not None)
    if failed:
        if failed[0] == ranks.rank:
            where = f"rank {ranks.rank}: " if ranks.rank else ""
            print(f"error: {where}{error}", file=sys.stderr)
        return 2

    if not args.resume:
        if rt.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
            write_text(args.out / run_files.CONFIG, cfg.to_json())
            run_files.write_json(args.out / run_files.RUN_INFO, info)
        # every rank fits the same statistics; DDP starts all ranks from rank 0's anyway
        if cfg.model.name == "dct":  # the input statistics, from the training data, before epoch 1
            settings = data_settings(cfg, 1)
            used = models.fit_input_statistics(parts.model, (b["image"] for b in data.eval_loader(
                folder, "train", settings, input_kind=models.input_kind("dct"),
                seen_only=cfg.data.seen_only)))
            if rt.is_main:
                print(f"dct input statistics from {used} training images", file=sys.stderr)
    if models.two_stage(cfg.model.name):
        from eval.two_stage import fit_two_stage  # it builds on this module's fit
        stopper = fit_two_stage(args.out, cfg, parts, info, rt, resume=args.resume)
    else:
        stopper = fit(args.out, cfg, parts, info, rt, resume=args.resume)
    if rt.is_main:
        print(f"{args.out}: best {stopper.metric} {stopper.best} at epoch {stopper.best_epoch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
