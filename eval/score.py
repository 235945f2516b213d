"""Score a submission against a built benchmark: `python eval/score.py`.

    python eval/score.py --benchmark out/mini --submission preds.csv [--split test]
        [--out report.json] [--bootstrap 1000] [--seed 0]
        [--leaderboard DIR --name NAME [--replace]]

The truth is the benchmark's manifest. The report gives the headline figures (attribution
accuracy, NMI, detection accuracy) with 95% percentile-bootstrap intervals and chance levels;
balanced accuracy, per-class precision/recall/F1 and the confusion matrix; the breakdowns by
seen/unseen semantic, by seen/unseen corruption, clean vs corrupted and per corruption x
severity; and, when the submission has score columns, ROC-AUCs and the decentralised reading
(eval/scores.py). The JSON report goes to stdout. With --out FILE.json it is also written
there, beside a Markdown summary FILE.md and two figures FILE.confusion.png and
FILE.corruption.png. With --leaderboard, the entry is added to DIR/leaderboard.json and
DIR/leaderboard.md.

A malformed submission, or an entry the leaderboard refuses, exits with code 2 and a message
naming the row, column or reason; nothing is written, since every output is computed before
the first is written (each one atomically).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from benchmark.atomic import sha256_file, write_bytes  # noqa: E402
from eval import leaderboard  # noqa: E402
from eval.bootstrap import LEVEL, headline_intervals  # noqa: E402
from eval.metrics import HEADLINE, breakdown_ids, contingency, full_report  # noqa: E402
from eval.scores import score_report  # noqa: E402
from eval.submission import SubmissionError, load_submission  # noqa: E402

TRUTH_COLUMNS = ["key", "split", "label", "seen", "corruption", "severity", "corruption_seen"]
CLEAN = "none"


class BenchmarkError(ValueError):
    """A --benchmark folder that is not a readable built benchmark."""


def _classes(benchmark: Path) -> tuple[str, ...]:
    try:
        return tuple(json.loads((benchmark / "classes.json").read_text())["classes"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"{benchmark / 'classes.json'}: no class list ({exc})") from None


def _benchmark_identity(benchmark: Path) -> dict:
    """The manifest's sha256 (the benchmark hash leaderboards compare: it changes with any
    sample, label or split, and not with the software versions dataset_info.json records),
    plus the protocol and config fingerprint from dataset_info.json where the build wrote one."""
    identity = {"path": str(benchmark), "manifest_sha256": sha256_file(benchmark / "manifest.parquet")}
    info_path = benchmark / "dataset_info.json"
    if info_path.is_file():
        try:
            info = json.loads(info_path.read_text())
        except ValueError as exc:
            raise BenchmarkError(f"{info_path}: not JSON ({exc})") from None
        identity.update({k: info.get(k) for k in ("protocol", "protocol_version", "config_sha256")})
    return identity


def _groups(truth) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Group ids and names for each breakdown, from the truth's columns (vectorised)."""
    seen = truth.column("seen").to_numpy(zero_copy_only=False).astype(bool)
    corruption = truth.column("corruption").combine_chunks().dictionary_encode()
    kinds = corruption.dictionary.to_pylist()
    kind = corruption.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    clean = np.array([k == CLEAN for k in kinds], dtype=bool)[kind]
    corruption_seen = truth.column("corruption_seen").to_numpy(zero_copy_only=False).astype(bool)
    severity = truth.column("severity").to_numpy(zero_copy_only=False).astype(np.int64)
    levels = int(severity.max(initial=0)) + 1
    return {
        "by_semantic": (np.where(seen, 0, 1), ["seen", "unseen"]),
        "by_corruption_seen": (np.where(clean, 0, np.where(corruption_seen, 1, 2)),
                               ["clean", "seen", "unseen"]),
        "clean_vs_corrupted": (np.where(clean, 0, 1), ["clean", "corrupted"]),
        "by_corruption_severity": (kind * levels + severity,
                                   [f"{k}/{s}" for k in kinds for s in range(levels)]),
    }


def score(benchmark: Path, submission: Path, split: str = "test", resamples: int = 1000,
          seed: int = 0) -> dict:
    """The report of `submission` against `benchmark`'s `split`; raises SubmissionError."""
    classes = _classes(benchmark)
    manifest = pq.read_table(benchmark / "manifest.parquet", columns=TRUTH_COLUMNS)
    truth = manifest.filter(pc.equal(manifest.column("split"), split))
    if truth.num_rows == 0:
        raise SubmissionError(f"{benchmark}: the manifest has no {split} split")
    sub = load_submission(submission, truth.column("key"), classes)
    labels = truth.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    k = len(classes)
    report = {
        "split": split, "classes": list(classes),
        "benchmark": _benchmark_identity(benchmark),
        "submission": {"path": str(submission), "sha256": sha256_file(submission)},
        **full_report(labels, sub.pred, classes),
    }
    if resamples > 0:
        intervals = headline_intervals(contingency(labels, sub.pred, k)[0], resamples, seed)
        report["ci"] = {"level": LEVEL, "method": "percentile bootstrap", "resamples": resamples,
                        "seed": seed, **{m: intervals[m].as_list() for m in HEADLINE}}
    else:
        report["ci"] = None
    for name, (ids, names) in _groups(truth).items():
        report[name] = breakdown_ids(labels, sub.pred, k, ids, names)
    report["scores"] = score_report(labels, sub.pred, classes, sub.class_scores, sub.fake_score)
    return report


def output_paths(out: Path) -> dict[str, Path]:
    """Where --out FILE.json puts each output: FILE.json, FILE.md, FILE.*.png."""
    stem = out.with_suffix("") if out.suffix.lower() == ".json" else out
    return {"json": out, "md": Path(f"{stem}.md"),
            "confusion": Path(f"{stem}.confusion.png"),
            "corruption": Path(f"{stem}.corruption.png")}


def render_outputs(report: dict, out: Path) -> dict[Path, bytes]:
    """Every file --out writes, as bytes, so nothing is written until all of them exist."""
    from eval.plots import confusion_png, corruption_png  # matplotlib only when figures are asked
    from eval.report_md import render

    paths = output_paths(out)
    figures = {"confusion": paths["confusion"].name, "corruption": paths["corruption"].name}
    return {
        paths["json"]: report_json(report).encode(),
        paths["md"]: render(report, figures).encode(),
        paths["confusion"]: confusion_png(report["confusion_matrix"], report["classes"]),
        paths["corruption"]: corruption_png(report["by_corruption_severity"]),
    }


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python eval/score.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--submission", required=True, type=Path,
                        help="CSV or Parquet: key, pred, optionally score_<class> for every class "
                             "and fake_score")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path,
                        help="write the JSON report here, and FILE.md, FILE.confusion.png, "
                             "FILE.corruption.png beside it")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--leaderboard", type=Path, metavar="DIR",
                        help="add the entry to DIR/leaderboard.json and DIR/leaderboard.md")
    parser.add_argument("--name", help="the entry's name on the leaderboard")
    parser.add_argument("--replace", action="store_true",
                        help="replace a leaderboard entry of the same name")
    args = parser.parse_args(argv)
    if args.leaderboard and not args.name:
        parser.error("--leaderboard needs --name")
    if args.bootstrap < 0:
        parser.error("--bootstrap must be 0 or more")
    for name in ("manifest.parquet", "classes.json"):
        if not (args.benchmark / name).is_file():
            print(f"error: {args.benchmark / name} not found: is --benchmark a built benchmark?",
                  file=sys.stderr)
            return 2
    try:
        report = score(args.benchmark, args.submission, args.split, args.bootstrap, args.seed)
        board = None
        if args.leaderboard:
            date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            entry = leaderboard.entry_from_report(report, args.name, date)
            board = leaderboard.add_entry(leaderboard.load(args.leaderboard), entry, args.replace)
    except (SubmissionError, BenchmarkError, leaderboard.LeaderboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = render_outputs(report, args.out) if args.out else {}
    for path, data in files.items():
        write_bytes(path, data)
    if board is not None:
        leaderboard.save(args.leaderboard, board)
    sys.stdout.write(report_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
