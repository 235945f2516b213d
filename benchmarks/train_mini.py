"""Train RepMix, Yu et al., DCT-CNN and Khoo et al. on a built mini benchmark, predict and score
its test split.

    python benchmarks/train_mini.py --benchmark OUT [--config configs/train_mini.yaml]
        [--work /tmp/a88-train-mini] [--models repmix,yu,dct] [--set key.path=value ...]

For each model it runs the real commands in child processes, as a user would:
    python -m eval.train --benchmark OUT --model M --config CONFIG --out WORK/M
    python -m eval.predict --run WORK/M --benchmark OUT --out WORK/M/preds.csv
    python eval/score.py --benchmark OUT --submission WORK/M/preds.csv --out WORK/M/report.json
and prints a Markdown table, the models side by side and chance beside them: attribution
accuracy with its 95% bootstrap interval, NMI, detection accuracy, attribution accuracy on seen
vs unseen semantics and on clean vs corrupted images, the three corruptions with the lowest
attribution accuracy (over all models' mean), the score-column figures (macro one-vs-rest
ROC-AUC and the decentralised reading of Khoo et al.: multiple-attribution, self-contradiction
and unclaimed-fake rates), and the wall time of training and prediction. A two-stage model's
epochs read "stage 1 + stage 2".
Chance is the share of the most frequent class in that group of test images (NMI: 0;
detection: the larger of real and not-real).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.benchmark_folder import open_benchmark  # noqa: E402

NAMES = {"repmix": "RepMix", "yu": "Yu et al.", "dct": "DCT-CNN", "khoo": "Khoo et al."}
DECENTRALISED = (("multiple-attribution rate %", "multiple_attribution_rate"),
                 ("self-contradiction rate %", "self_contradiction_rate"),
                 ("unclaimed-fake rate %", "unclaimed_fake_rate"))
CLEAN = "none"


def run(cmd: list[str]) -> float:
    """Run a command from the repository root; its wall time in seconds; stop on failure."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)  # stdout: the table only
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return time.perf_counter() - start


def corruption_accuracy(report: dict) -> dict[str, float]:
    """Attribution accuracy per corruption (all severities together), clean images left out."""
    hits, counts = defaultdict(float), defaultdict(int)
    for name, group in report["by_corruption_severity"].items():
        kind = name.split("/")[0]
        if kind != CLEAN and group["count"]:
            hits[kind] += group["attribution_accuracy"] * group["count"]
            counts[kind] += group["count"]
    return {k: hits[k] / counts[k] for k in counts}


def chance_levels(benchmark: Path, split: str = "test") -> dict[str, float]:
    """Most-frequent-class share per group of the split's images."""
    rows = open_benchmark(benchmark).manifest(["label", "seen", "corruption"], split=split).to_pylist()

    def share(selected: list[dict]) -> float:
        return max(Counter(r["label"] for r in selected).values()) / len(selected) if selected else float("nan")

    out = {"all": share(rows),
           "detection": max(sum(r["label"] == 0 for r in rows), sum(r["label"] != 0 for r in rows)) / len(rows),
           "seen": share([r for r in rows if r["seen"]]), "unseen": share([r for r in rows if not r["seen"]]),
           "clean": share([r for r in rows if r["corruption"] == CLEAN]),
           "corrupted": share([r for r in rows if r["corruption"] != CLEAN])}
    for kind in {r["corruption"] for r in rows} - {CLEAN}:
        out[kind] = share([r for r in rows if r["corruption"] == kind])
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def markdown_table(results: dict[str, dict], chance: dict[str, float]) -> str:
    """results[model] = {"report": score.py's JSON, "train_s": float, "predict_s": float}."""
    models = list(results)
    reports = {m: results[m]["report"] for m in models}
    per_corruption = {m: corruption_accuracy(reports[m]) for m in models}
    kinds = sorted({k for m in models for k in per_corruption[m]},
                   key=lambda k: (sum(per_corruption[m].get(k, 0.0) for m in models) / len(models), k))
    lines = ["| | " + " | ".join(NAMES.get(m, m) for m in models) + " | chance |",
             "|---|" + "---:|" * (len(models) + 1)]

    def row(label: str, cells: list[str], chance_cell: str) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {chance_cell} |")

    def attribution(report: dict) -> str:
        ci = report.get("ci")
        text = _pct(report["attribution_accuracy"])
        if ci:
            lo, hi = ci["attribution_accuracy"]
            text += f" [{_pct(lo)}, {_pct(hi)}]"
        return text

    row("attribution accuracy % (95% CI)", [attribution(reports[m]) for m in models], _pct(chance["all"]))
    row("NMI %", [_pct(reports[m]["nmi"]) for m in models], "0.0")
    row("detection accuracy %", [_pct(reports[m]["detection_accuracy"]) for m in models],
        _pct(chance["detection"]))
    for group, key in (("seen", "by_semantic"), ("unseen", "by_semantic"),
                       ("clean", "clean_vs_corrupted"), ("corrupted", "clean_vs_corrupted")):
        label = f"attribution %, {group} {'semantics' if key == 'by_semantic' else 'images'}"
        row(label, [_pct(reports[m][key].get(group, {}).get("attribution_accuracy")) for m in models],
            _pct(chance.get(group)))
    for i, kind in enumerate(kinds[:3], 1):
        row(f"attribution %, worst corruption {i}: {kind}",
            [_pct(per_corruption[m].get(kind)) for m in models], _pct(chance.get(kind)))
    scores = {m: reports[m].get("scores") or {} for m in models}
    row("macro ROC-AUC % (one-vs-rest)", [_pct(scores[m].get("auc_macro")) for m in models], "50.0")
    for label, key in DECENTRALISED:
        row(label, [_pct(scores[m].get("decentralised", {}).get(key)) for m in models], "")
    row("test images", [str(reports[m]["count"]) for m in models], "")
    row("epochs trained (best)", [f"{results[m].get('epochs', '–')} ({results[m].get('best_epoch', '–')})"
                                  for m in models], "")
    row("train wall time (min)", [f"{results[m]['train_s'] / 60:.1f}" for m in models], "")
    row("predict wall time (s)", [f"{results[m]['predict_s']:.0f}" for m in models], "")
    return "\n".join(lines) + "\n"


def epochs_trained(run: Path) -> dict[str, str]:
    """Epochs of the run's last and best checkpoints; "stage 1 + stage 2" for a two-stage run."""
    folders = [f for f in (run / "primary", run) if (f / "last.json").is_file()]
    return {key: " + ".join(str(json.loads((f / f"{tag}.json").read_text())["epoch"]) for f in folders)
            for key, tag in (("epochs", "last"), ("best_epoch", "best"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--benchmark", required=True, type=Path, help="a built mini benchmark")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "train_mini.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/a88-train-mini"),
                        help="runs go to WORK/<model> (replaced)")
    parser.add_argument("--models", default="repmix,yu,dct,khoo")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="passed to every eval.train")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    py = sys.executable
    results = {}
    for model in args.models.split(","):
        out = args.work / model
        if out.exists():
            shutil.rmtree(out)
        sets = [a for s in args.set for a in ("--set", s)]
        train_s = run([py, "-m", "eval.train", "--benchmark", str(args.benchmark), "--model", model,
                       "--config", str(args.config), "--out", str(out), *sets])
        preds = out / "preds.csv"
        predict_s = run([py, "-m", "eval.predict", "--run", str(out), "--benchmark", str(args.benchmark),
                         "--out", str(preds)])
        report_path = out / "report.json"
        done = subprocess.run([py, "eval/score.py", "--benchmark", str(args.benchmark), "--submission",
                               str(preds), "--out", str(report_path), "--bootstrap", str(args.bootstrap)],
                              cwd=ROOT, stdout=subprocess.DEVNULL)
        if done.returncode != 0:
            sys.exit(f"scoring {preds} failed ({done.returncode})")
        results[model] = {"report": json.loads(report_path.read_text()), "train_s": train_s,
                          "predict_s": predict_s,
                          **epochs_trained(out)}
    command = "python benchmarks/train_mini.py --benchmark " + str(args.benchmark) + (
        " " + " ".join(f"--set {s}" for s in args.set) if args.set else "")
    print(f"Test split of {args.benchmark} ({command}):\n")
    print(markdown_table(results, chance_levels(args.benchmark)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
