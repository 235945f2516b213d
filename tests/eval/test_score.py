"""Scoring: metrics against direct computation and sklearn; every malformed submission refused."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, normalized_mutual_info_score

from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from eval.metrics import breakdown, full_report, headline
from eval.score import main

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["real", "sngan", "progan"]


def test_headline_on_a_hand_made_example():
    truth = np.array([0, 0, 1, 2, 2])
    pred = np.array([0, 1, 1, 2, 0])
    h = headline(truth, pred)
    assert h["attribution_accuracy"] == pytest.approx(3 / 5)
    # real?  truth T T F F F, pred T F F F T: right on rows 0, 2, 3
    assert h["detection_accuracy"] == pytest.approx(3 / 5)
    assert h["nmi"] == pytest.approx(normalized_mutual_info_score(truth, pred))


def test_random_submissions_match_sklearn_and_breakdowns_sum_back():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 500)
    pred = np.where(rng.random(500) < 0.6, truth, rng.integers(0, 3, 500))
    report = full_report(truth, pred, tuple(CLASSES))
    assert report["attribution_accuracy"] == pytest.approx(accuracy_score(truth, pred))
    assert np.array(report["confusion_matrix"]).sum() == 500
    assert np.trace(report["confusion_matrix"]) == (truth == pred).sum()
    groups = rng.choice(["a", "b", "c"], 500)
    parts = breakdown(truth, pred, groups)
    assert sum(p["count"] for p in parts.values()) == 500
    weighted = sum(p["attribution_accuracy"] * p["count"] for p in parts.values()) / 500
    assert weighted == pytest.approx(report["attribution_accuracy"])


def test_perfect_and_constant_submissions():
    truth = np.array([0] * 4 + [1] * 3 + [2] * 3)
    perfect = full_report(truth, truth.copy(), tuple(CLASSES))
    assert perfect["attribution_accuracy"] == perfect["nmi"] == perfect["detection_accuracy"] == 1.0
    constant = full_report(truth, np.zeros_like(truth), tuple(CLASSES))
    assert constant["attribution_accuracy"] == pytest.approx(0.4)
    assert constant["detection_accuracy"] == pytest.approx(0.4)
    assert constant["nmi"] == pytest.approx(0.0)
    assert constant["chance"]["detection_accuracy"] == pytest.approx(0.6)


@pytest.fixture
def bench(tmp_path) -> Path:
    rows = []
    corruptions = ["none", "fog", "glass_blur"]
    for i in range(12):
        row = {n: None for n in MANIFEST_SCHEMA.names}
        label = i % 3
        corruption = corruptions[i % 3 if i >= 6 else 0]
        row.update(key=f"{CLASSES[label]}-faces-s{i:08d}", split="test" if i < 9 else "val",
                   label=label, source=CLASSES[label], seen=i % 2 == 0, corruption=corruption,
                   severity=0 if corruption == "none" else 3,
                   corruption_seen=corruption != "glass_blur", shard="test-000000.tar", position=i)
        rows.append(row)
    write_manifest(rows, tmp_path / "manifest.parquet")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    return tmp_path


def _truth(bench: Path, split="test"):
    return [r for r in pq.read_table(bench / "manifest.parquet").to_pylist() if r["split"] == split]


def _write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_scores_a_csv_with_names_and_ids(bench, tmp_path, capsys):
    truth = _truth(bench)
    lines = ["key,pred"] + [f"{r['key']},{CLASSES[r['label']] if i % 2 else r['label']}"
                            for i, r in enumerate(reversed(truth))]
    sub = _write_csv(tmp_path / "sub.csv", lines)
    out = tmp_path / "report.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    assert report["attribution_accuracy"] == 1.0 and report["count"] == 9
    assert set(report["by_corruption_seen"]) == {"clean", "seen", "unseen"}
    assert report["by_corruption_severity"]["fog/3"]["count"] == 1
    assert report["by_semantic"]["seen"]["count"] + report["by_semantic"]["unseen"]["count"] == 9


def test_parquet_submission_and_val_split(bench, tmp_path):
    truth = _truth(bench, "val")
    sub = tmp_path / "sub.parquet"
    pq.write_table(pa.table({"key": [r["key"] for r in truth], "pred": [0] * len(truth)}), sub)
    out = tmp_path / "r.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--split", "val",
                 "--out", str(out)]) == 0
    assert json.loads(out.read_text())["count"] == 3


@pytest.mark.parametrize("make, message", [
    (lambda keys: ["key,pred"] + [f"{k},real" for k in keys[:-1]], r"1 key\(s\) of the split have no prediction"),
    (lambda keys: ["key,pred"] + [f"{k},real" for k in keys] + [f"{keys[0]},real"], "row 11, column key: .* repeats row 2"),
    (lambda keys: ["key,pred", "nope-x-1,real"] + [f"{k},real" for k in keys], "row 2, column key: 'nope-x-1' is not in the split"),
    (lambda keys: ["key,pred"] + [f"{k},biggan" for k in keys], "row 2, column pred: 'biggan' is not a class"),
    (lambda keys: ["key,pred"] + [f"{k},3" for k in keys], "row 2, column pred: '3'"),
    (lambda keys: ["key,prediction"] + [f"{k},0" for k in keys], "missing column\\(s\\) pred"),
    (lambda keys: ["key,pred"], "a header but no rows"),
])
def test_malformed_submissions_exit_2_and_write_nothing(bench, tmp_path, capsys, make, message):
    keys = [r["key"] for r in _truth(bench)]
    sub = _write_csv(tmp_path / "sub.csv", make(keys))
    out = tmp_path / "report.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sub.csv" in err

    assert re.search(message, err), err
    assert not out.exists()


@pytest.mark.parametrize("name, data, message", [
    ("empty.csv", b"", "the file is empty"),
    ("sub.txt", b"key,pred\n", "expected a .csv or .parquet"),
    ("sub.parquet", b"PAR1 not really", "not a readable PARQUET"),
])
def test_unreadable_files_exit_2(bench, tmp_path, capsys, name, data, message):
    sub = tmp_path / name
    sub.write_bytes(data)
    assert main(["--benchmark", str(bench), "--submission", str(sub)]) == 2
    assert message in capsys.readouterr().err


def test_runs_as_a_script_from_the_repository():
    done = subprocess.run([sys.executable, "eval/score.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "--submission" in done.stdout
