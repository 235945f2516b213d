"""Time the scorer on a fake benchmark of a million test rows with every score column.

    python benchmarks/score.py [--rows 1000000] [--out /tmp/a88-score-bench] [--bootstrap 1000]

Writes a fake benchmark folder (manifest.parquet, classes.json: 9 classes, 8 corruptions x 5
severities) and a CSV submission (key, pred, score_<class> x 9, fake_score), then runs the real
command, `python eval/score.py ... --out report.json` (JSON, Markdown and both PNGs, 1000
bootstrap resamples), in a child process so its wall time and peak RSS are its own. For scale
it then computes the three headline figures the plain way in this process (read both files
whole with pyarrow, align on the key, sklearn's accuracy and NMI) and prints the ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmark.manifest import MANIFEST_SCHEMA  # noqa: E402

CLASSES = ["real", "sngan", "progan", "stylegan2", "stylegan3", "biggan", "ddpm", "ddim", "vqgan"]
CORRUPTIONS = ["gaussian_noise", "shot_noise", "defocus_blur", "glass_blur", "fog", "contrast",
               "jpeg_compression", "pixelate"]


def make_benchmark(folder: Path, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A manifest of `rows` test rows (written directly with the manifest schema, since
    write_manifest validates row dicts one by one) and classes.json; returns labels, severities."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(CLASSES), rows).astype(np.int32)
    corrupted = rng.random(rows) < 0.5
    corruption = np.where(corrupted, np.array(CORRUPTIONS)[rng.integers(0, len(CORRUPTIONS), rows)],
                          "none")
    severity = np.where(corrupted, rng.integers(1, 6, rows), 0).astype(np.int32)
    keys = pa.array([f"{CLASSES[c]}-faces-s{i:08d}" for i, c in enumerate(label)])
    columns = {
        "key": keys, "split": pa.array(["test"] * rows), "source": pa.array(np.array(CLASSES)[label]),
        "label": pa.array(label), "semantic": pa.array(["faces"] * rows),
        "semantic_label": pa.array(np.zeros(rows, np.int32)), "seen": pa.array(rng.random(rows) < 0.5),
        "corruption": pa.array(corruption), "severity": pa.array(severity),
        "corruption_seen": pa.array(~np.isin(corruption, ["fog", "pixelate"])),
        "shard": pa.array([f"test-{i // 1000:06d}.tar" for i in range(rows)]),
        "position": pa.array((np.arange(rows) % 1000).astype(np.int32)),
    }
    table = pa.table({f.name: columns[f.name] if f.name in columns else pa.nulls(rows, f.type)
                      for f in MANIFEST_SCHEMA}, schema=MANIFEST_SCHEMA)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "manifest.parquet", compression="zstd")
    (folder / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    return label, severity


def make_submission(path: Path, folder: Path, label: np.ndarray, severity: np.ndarray,
                    seed: int) -> None:
    """Softmax scores of noisy logits that favour the true class less as severity grows; pred
    is their argmax; rows shuffled so that aligning them to the manifest is real work."""
    rng = np.random.default_rng(seed + 1)
    rows = len(label)
    logits = rng.normal(size=(rows, len(CLASSES)))
    logits[np.arange(rows), label] += 2.0 - 0.3 * severity
    scores = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores /= scores.sum(axis=1, keepdims=True)
    order = rng.permutation(rows)
    keys = pq.read_table(folder / "manifest.parquet", columns=["key"]).column("key").take(order)
    columns = {"key": keys, "pred": pa.array(np.array(CLASSES)[scores.argmax(axis=1)][order])}
    for i, c in enumerate(CLASSES):
        columns[f"score_{c}"] = pa.array(scores[order, i].round(6))
    columns["fake_score"] = pa.array((1 - scores[order, 0]).round(6))
    pacsv.write_csv(pa.table(columns), path)


def plain_headline(folder: Path, submission: Path) -> dict[str, float]:
    """The three headline figures the obvious way: whole files, a sort-based join, sklearn."""
    from sklearn.metrics import accuracy_score, normalized_mutual_info_score

    truth = pq.read_table(folder / "manifest.parquet", columns=["key", "split", "label"])
    truth = truth.filter(pc.equal(truth.column("split"), "test"))
    sub = pacsv.read_csv(submission, convert_options=pacsv.ConvertOptions(
        include_columns=["key", "pred"]))
    truth = truth.take(pc.sort_indices(truth, [("key", "ascending")]))
    sub = sub.take(pc.sort_indices(sub, [("key", "ascending")]))
    assert truth.column("key").equals(sub.column("key"))
    y = truth.column("label").to_numpy()
    p = pc.index_in(sub.column("pred"), value_set=pa.array(CLASSES)).to_numpy()
    return {"attribution_accuracy": accuracy_score(y, p), "nmi": normalized_mutual_info_score(y, p),
            "detection_accuracy": accuracy_score(y == 0, p == 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/a88-score-bench"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    bench, submission = args.out / "benchmark", args.out / "submission.csv"
    start = time.perf_counter()
    label, severity = make_benchmark(bench, args.rows, args.seed)
    make_submission(submission, bench, label, severity, args.seed)
    print(f"fake benchmark: {args.rows} test rows, {len(CLASSES)} classes; submission "
          f"{submission.stat().st_size / 2**20:.0f} MiB CSV ({time.perf_counter() - start:.1f} s to make)")

    report = args.out / "report.json"
    cmd = [sys.executable, str(ROOT / "eval" / "score.py"), "--benchmark", str(bench),
           "--submission", str(submission), "--out", str(report),
           "--bootstrap", str(args.bootstrap), "--seed", str(args.seed)]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(f"scoring failed with exit code {done.returncode}", file=sys.stderr)
        return done.returncode
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_mib, cpu = child.ru_maxrss / 1024, child.ru_utime + child.ru_stime
    figures = json.loads(report.read_text())

    start = time.perf_counter()
    plain = plain_headline(bench, submission)
    plain_wall = time.perf_counter() - start
    print(f"eval/score.py (JSON + Markdown + 2 PNGs, {args.bootstrap} resamples): {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU, peak RSS {peak_mib:.0f} MiB")
    print(f"plain pyarrow + sklearn headline only: {plain_wall:.1f} s wall; "
          f"ratio scorer / plain = {wall / plain_wall:.2f}")
    for name, value in plain.items():
        ci = figures["ci"][name]
        print(f"  {name}: scorer {figures[name]:.6f} [{ci[0]:.4f}, {ci[1]:.4f}], plain {value:.6f}")
        if abs(figures[name] - value) > 1e-9:
            print(f"MISMATCH in {name}", file=sys.stderr)
            return 1
    print(f"  detection AUC {figures['scores']['detection_auc']:.4f}, macro one-vs-rest AUC "
          f"{figures['scores']['auc_macro']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
