"""The scorer's logic behind `python eval/score.py` (the CLI stays there, where users call it).

`score` computes the report of a submission against a benchmark's split; `render_outputs`
turns it into the files --out writes; see eval/score.py for the report's contents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmark.atomic import sha256_file
from benchmark.protocol import CLEAN
from eval.benchmark_folder import BenchmarkFolder, open_benchmark
from eval.scoring.bootstrap import LEVEL, headline_intervals
from eval.scoring.metrics import HEADLINE, breakdown_ids, contingency, full_report
from eval.scoring.scores import score_report
from eval.scoring.submission import SubmissionError, load_submission

TRUTH_COLUMNS = ["key", "split", "label", "seen", "corruption", "severity", "corruption_seen"]


def _benchmark_identity(folder: BenchmarkFolder) -> dict:
    """The manifest's sha256 (the benchmark hash leaderboards compare), plus the protocol and
    config fingerprint from dataset_info.json where the build wrote one."""
    identity = {"path": str(folder.path), "manifest_sha256": folder.manifest_sha256}
    if folder.dataset_info:
        identity.update({k: folder.dataset_info.get(k)
                         for k in ("protocol", "protocol_version", "config_sha256")})
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


def seen_corruption_names(truth) -> list[str]:
    """The corruptions the manifest marks as seen in training (drawn on the corruption figure)."""
    seen = truth.filter(truth.column("corruption_seen")).column("corruption").to_pylist()
    return sorted(set(seen) - {CLEAN})


def score(benchmark: str | Path | BenchmarkFolder, submission: Path, split: str = "test",
          resamples: int = 1000, seed: int = 0) -> dict:
    """The report of `submission` against `benchmark`'s `split` (a folder path, or one already
    opened); raises SubmissionError, or BenchmarkError for a broken folder."""
    folder = benchmark if isinstance(benchmark, BenchmarkFolder) else open_benchmark(benchmark)
    classes = folder.classes
    truth = folder.manifest(TRUTH_COLUMNS, split=split)
    if truth.num_rows == 0:
        raise SubmissionError(f"{folder.path}: the manifest has no {split} split")
    sub = load_submission(submission, truth.column("key"), classes)
    labels = truth.column("label").to_numpy(zero_copy_only=False).astype(np.int64)
    k = len(classes)
    report = {
        "split": split, "classes": list(classes),
        "benchmark": _benchmark_identity(folder),
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
    report["corruptions_seen"] = seen_corruption_names(truth)
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
    # matplotlib is imported only when figures are asked for
    from eval.scoring.plots import confusion_png, corruption_png
    from eval.scoring.report_md import render

    paths = output_paths(out)
    figures = {"confusion": paths["confusion"].name, "corruption": paths["corruption"].name}
    return {
        paths["json"]: report_json(report).encode(),
        paths["md"]: render(report, figures).encode(),
        paths["confusion"]: confusion_png(report["confusion_matrix"], report["classes"]),
        paths["corruption"]: corruption_png(report["by_corruption_severity"],
                                                    report.get("corruptions_seen")),
    }


def report_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False) + "\n"
