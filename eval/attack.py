"""Adversarial robustness of a trained run (RepMix paper, Table 2): `python -m eval.attack`.

    python -m eval.attack --run RUN --benchmark OUT [--split test] [--eps 2,4,8,16,24,32]
        [--step-factor 2.5] [--iterations 20] [--limit N] [--checkpoint best|last]
        [--device auto|cpu|cuda] [--force] --out DIR

Untargeted white-box I-FGSM (Kurakin et al. 2017) on the pixels in [0, 1], before the
normalisation to [-1, 1]: x_{t+1} = clip_[0,1](clip_{x0 +- eps}(x_t + step * sign(grad_x CE))),
cross entropy on the model's final logits (RepMix: the gated attribution logits, mixing off;
Khoo et al.: [0, s_1 .. s_{C-1}], the source branches' logits beside a constant 0 for real,
whose argmax is its decision rule, so the attack drives the true source's sigmoid below 0.5 and
below the others; its detector is not attacked).
eps is given in 1/255 units; the paper gives no step size, so step = step_factor * eps /
iterations (default 2.5 x eps / 20: every eps is reachable in the 20 steps).

Writes DIR/attack.json (settings, and per eps accuracy before, after and the attribution error,
before minus after), DIR/attack.md (a table like the paper's Table 2) and DIR/attack.png (error
vs eps). Bad input exits with code 2 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmark.atomic import atomic_path, write_text
from benchmark.command_line import command_parser
from benchmark.config import ConfigError
from eval import data, models, run_files
from eval.benchmark_folder import BenchmarkError
from eval.models import ModelError
from eval.predict import load_run
from eval.run_files import RunError
from eval.train import data_settings

PROG = "python -m eval.attack"  # the name in --help; a88 passes its own

PAPER_EPS = (2, 4, 8, 16, 24, 32)  # the paper's Table 2, in 1/255 units


def to_model_range(images01: Tensor) -> Tensor:
    """[0, 1] pixels to the [-1, 1] the models take (eval.data.normalise)."""
    return images01 * 2.0 - 1.0


def _logits(model: nn.Module, images: Tensor) -> Tensor:
    out = model(images)  # 4-D input: RepMix runs with mixing off
    return out.logits


def ifgsm(model: nn.Module, images01: Tensor, labels: Tensor, *, eps: float, step: float,
          iterations: int, normalise: Callable[[Tensor], Tensor] = to_model_range) -> Tensor:
    """Adversarial images in [0, 1] within `eps` (L-inf, same units as the pixels) of `images01`.

    The model runs in eval mode (its mode is restored after); the gradient is taken w.r.t. the
    input only, so the weights and their .grad are untouched."""
    if eps < 0 or step < 0 or iterations < 0:
        raise ValueError(f"ifgsm: eps ({eps}), step ({step}) and iterations ({iterations}) must be >= 0")
    if images01.dim() != 4:
        raise ValueError(f"ifgsm: images must be (B, 3, H, W), got shape {tuple(images01.shape)}")
    was_training = model.training
    model.eval()
    x0 = images01.detach()
    low, high = (x0 - eps).clamp(0.0, 1.0), (x0 + eps).clamp(0.0, 1.0)
    x = x0.clone()
    try:
        for _ in range(iterations):
            x.requires_grad_(True)
            loss = F.cross_entropy(_logits(model, normalise(x)).float(), labels)
            (grad,) = torch.autograd.grad(loss, x)
            x = torch.minimum(torch.maximum(x.detach() + step * grad.sign(), low), high)
    finally:
        model.train(was_training)
    return x.detach()


@torch.no_grad()
def _correct(model: nn.Module, images01: Tensor, labels: Tensor,
             normalise: Callable[[Tensor], Tensor]) -> int:
    return int((_logits(model, normalise(images01)).argmax(1) == labels).sum())


def attack_accuracy(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], eps_list: list[float], *,
                    step_factor: float, iterations: int,
                    normalise: Callable[[Tensor], Tensor] = to_model_range) -> dict:
    """Per eps (pixel units, [0, 1] scale): accuracy before and after the attack and the
    attribution error (before - after), over ([0, 1] images, labels) batches."""
    was_training = model.training
    model.eval()
    count, before, after = 0, 0, [0] * len(eps_list)
    for images01, labels in batches:
        count += len(labels)
        before += _correct(model, images01, labels, normalise)
        for i, eps in enumerate(eps_list):
            adv = ifgsm(model, images01, labels, eps=eps, step=step_factor * eps / max(iterations, 1),
                        iterations=iterations, normalise=normalise)
            after[i] += _correct(model, adv, labels, normalise)
    model.train(was_training)
    if count == 0:
        raise ValueError("attack_accuracy: no images")
    acc = before / count
    return {"images": count, "accuracy_before": acc,
            "by_eps": [{"accuracy_after": a / count, "error": acc - a / count} for a in after]}


# ---------------------------------------------------------------- the command


class AttackError(ValueError):
    """A bad command-line value; the message names the option."""


def parse_eps(text: str) -> list[float]:
    """'2,4,8' -> [2.0, 4.0, 8.0] (1/255 units): non-empty, finite, in [0, 255], no repeats."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise AttackError(f"--eps {text!r}: expected comma-separated numbers in 1/255 units, "
                          f"e.g. 2,4,8,16,24,32") from None
    if not values or any(not math.isfinite(v) or not 0 <= v <= 255 for v in values):
        raise AttackError(f"--eps {text!r}: every eps must be a number in [0, 255] (1/255 units)")
    if len(set(values)) != len(values):
        raise AttackError(f"--eps {text!r}: an eps is repeated")
    return values


def _eps_label(eps: float) -> str:
    return f"{eps:g}"


def _batches01(loader: Iterable[dict], limit: int | None, device: torch.device):
    """([0, 1] images, labels) from eval_loader's [-1, 1] batches, the first `limit` images only."""
    left = limit
    for batch in loader:
        images, labels = batch["image"], batch["label"]
        if left is not None:
            if left <= 0:
                return
            images, labels = images[:left], labels[:left]
            left -= len(labels)
        yield ((images.float() + 1.0) / 2.0).to(device), labels.to(device)


def markdown_table(report: dict) -> str:
    eps = [_eps_label(e) for e in report["eps"]]
    rows = report["results"]
    title = (f"Attribution error (%) under I-FGSM ({report['iterations']} iterations, step = "
             f"{report['step_factor']:g} x eps / {report['iterations']}), {report['split']} split, "
             f"{report['images']} images; eps in 1/255 units.")
    lines = [title, "",
             "| Model | " + " | ".join(f"eps={e}" for e in eps) + " |",
             "|---|" + "---:|" * len(eps),
             f"| {report['model']} | " + " | ".join(f"{100 * r['error']:.2f}" for r in rows) + " |", "",
             "| eps | accuracy before (%) | accuracy after (%) | error (%) |", "|---:|---:|---:|---:|"]
    lines += [f"| {_eps_label(r['eps'])} | {100 * r['accuracy_before']:.2f} | {100 * r['accuracy_after']:.2f} "
              f"| {100 * r['error']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_error(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    run = Path(report["run"]).name
    ax.plot(report["eps"], [100 * r["error"] for r in report["results"]], marker="o",
            label=report["model"] if run == report["model"] else f"{report['model']} ({run})")
    ax.set_xlabel("eps (1/255)")
    # Table 2's error is accuracy lost, so the clean accuracy it is taken from goes beside it.
    ax.set_ylabel("attribution error (%)\n= accuracy before - after")
    before = report["results"][0]["accuracy_before"] if report["results"] else None
    if before is not None:
        ax.axhline(100 * before, color="grey", linestyle="--", linewidth=1,
                   label=f"accuracy without attack ({100 * before:.1f}%)")
    # The whole 0-100 range: a zoomed axis makes a flat curve look steep.
    ax.set_ylim(min(0, *(100 * r["error"] for r in report["results"])), 100)
    ax.set_title(f"I-FGSM, {report['iterations']} iterations, {report['images']} {report['split']} images")
    ax.set_xticks(report["eps"])
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n")[0], [
        "--run runs/repmix --benchmark out/mini --eps 2,8,32 --limit 500 --out attack/repmix"])
    parser.add_argument("--run", required=True, type=Path, help="a run folder of eval.train")
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--eps", default=",".join(map(str, PAPER_EPS)),
                        help="comma-separated eps in 1/255 units (default: the paper's)")
    parser.add_argument("--step-factor", type=float, default=2.5,
                        help="step = step_factor * eps / iterations")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--limit", type=int, help="attack only the first N images")
    parser.add_argument("--out", required=True, type=Path, help="folder for attack.json/.md/.png")
    parser.add_argument("--checkpoint", default=run_files.BEST, choices=(run_files.BEST, run_files.LAST))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--force", action="store_true",
                        help="attack even if the run was trained on another benchmark")
    return parser.parse_args(argv)


def _check_args(args: argparse.Namespace) -> list[float]:
    eps = parse_eps(args.eps)
    if not (math.isfinite(args.step_factor) and args.step_factor > 0):
        raise AttackError(f"--step-factor {args.step_factor}: must be a positive number")
    if args.iterations < 1:
        raise AttackError(f"--iterations {args.iterations}: must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise AttackError(f"--limit {args.limit}: must be at least 1")
    if args.out.exists() and not args.out.is_dir():
        raise AttackError(f"--out {args.out}: exists and is not a folder")
    return eps


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    try:
        eps = _check_args(args)
        loaded = load_run(args.run, args.benchmark, args.checkpoint, args.device, args.force)
        settings = data_settings(loaded.cfg, models.mixes(loaded.name))
        if data.eval_count(loaded.folder, args.split, settings, seen_only=False) == 0:
            raise AttackError(f"--split {args.split}: the benchmark has no {args.split} images")
    except (AttackError, ConfigError, RunError, BenchmarkError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    loader = data.eval_loader(loaded.folder, args.split, settings,
                              input_kind=models.input_kind(loaded.name), seen_only=False)
    result = attack_accuracy(loaded.model, _batches01(loader, args.limit, loaded.rt.device),
                             [e / 255.0 for e in eps], step_factor=args.step_factor,
                             iterations=args.iterations)
    report = {
        "model": loaded.name, "run": str(args.run), "checkpoint": args.checkpoint, "epoch": loaded.epoch,
        "benchmark": str(args.benchmark), "manifest_sha256": loaded.folder.manifest_sha256,
        "split": args.split, "images": result["images"], "limit": args.limit,
        "attack": "I-FGSM, untargeted, white-box, L-inf, on [0, 1] pixels before normalisation",
        "eps": eps, "eps_units": "1/255", "step_factor": args.step_factor, "iterations": args.iterations,
        "step": "step_factor * eps / iterations",
        "results": [{"eps": e, "accuracy_before": result["accuracy_before"], **r}
                    for e, r in zip(eps, result["by_eps"])],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "attack.json", json.dumps(report, indent=2) + "\n")
    write_text(args.out / "attack.md", markdown_table(report))
    plot_error(report, args.out / "attack.png")
    errors = ", ".join(f"{_eps_label(r['eps'])}: {100 * r['error']:.1f}%" for r in report["results"])
    print(f"{args.out}: I-FGSM on {result['images']} {args.split} images by {loaded.name}; error {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
