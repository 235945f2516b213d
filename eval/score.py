"""Score a submission against a built benchmark: `python eval/score.py`.

    python eval/score.py --benchmark out/mini --submission preds.csv [--split test] [--out report.json]

The truth is the benchmark's manifest; the report (JSON on stdout, and --out) gives the
headline figures with their chance levels and the breakdowns by seen/unseen semantic, by
seen/unseen corruption, clean vs corrupted, and per corruption x severity. A malformed
submission exits with code 2 and a message naming the row or column; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmark.atomic import write_text  # noqa: E402
from eval.metrics import breakdown, full_report  # noqa: E402
from eval.submission import SubmissionError, load_submission  # noqa: E402


def score(benchmark: Path, submission: Path, split: str = "test") -> dict:
    classes = tuple(json.loads((benchmark / "classes.json").read_text())["classes"])
    truth = pq.read_table(benchmark / "manifest.parquet",
                          columns=["key", "split", "label", "seen", "corruption", "severity",
                                   "corruption_seen"]).to_pylist()
    truth = [r for r in truth if r["split"] == split]
    if not truth:
        raise SubmissionError(f"{benchmark}: the manifest has no {split} split")
    sub = load_submission(submission, [r["key"] for r in truth], classes)
    labels = np.array([r["label"] for r in truth], dtype=np.int64)
    corrupted = np.array([r["corruption"] != "none" for r in truth])
    report = {
        "split": split, "classes": list(classes),
        **full_report(labels, sub.pred, classes),
        "by_semantic": breakdown(labels, sub.pred, np.array(
            ["seen" if r["seen"] else "unseen" for r in truth])),
        "by_corruption_seen": breakdown(labels, sub.pred, np.array(
            ["clean" if r["corruption"] == "none" else "seen" if r["corruption_seen"] else "unseen"
             for r in truth])),
        "clean_vs_corrupted": breakdown(labels, sub.pred, np.where(corrupted, "corrupted", "clean")),
        "by_corruption_severity": breakdown(labels, sub.pred, np.array(
            [f"{r['corruption']}/{r['severity']}" for r in truth])),
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python eval/score.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--submission", required=True, type=Path, help="CSV or Parquet: key, pred")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    for name in ("manifest.parquet", "classes.json"):
        if not (args.benchmark / name).is_file():
            print(f"error: {args.benchmark / name} not found: is --benchmark a built benchmark?",
                  file=sys.stderr)
            return 2
    try:
        report = score(args.benchmark, args.submission, args.split)
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    if args.out:
        write_text(args.out, text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
