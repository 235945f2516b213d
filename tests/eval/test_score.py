"""Scoring: metrics against direct computation and sklearn; every malformed submission refused."""

from __future__ import annotations

import json
import math
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
from eval.scoring.metrics import breakdown, full_report, headline
from eval.score import main, score

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


def test_headline_nmi_by_hand_when_truth_and_prediction_have_different_entropies():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1, 1])
    n, joint = 6, {(0, 0): 2, (0, 1): 1, (1, 1): 2, (2, 1): 1}
    truth_counts, pred_counts = {0: 3, 1: 2, 2: 1}, {0: 2, 1: 4}
    mi = sum(c / n * math.log(n * c / (truth_counts[t] * pred_counts[p])) for (t, p), c in joint.items())
    h_truth = -sum(c / n * math.log(c / n) for c in truth_counts.values())
    h_pred = -sum(c / n * math.log(c / n) for c in pred_counts.values())
    # sklearn's default (and the released RepMix code's): MI over the arithmetic mean entropy.
    want = mi / ((h_truth + h_pred) / 2)
    # The entropies differ enough that another normalisation would miss by far more than rel=1e-9.
    for other in (math.sqrt(h_truth * h_pred), max(h_truth, h_pred), min(h_truth, h_pred)):
        assert abs(mi / other - want) > 1e-3
    assert headline(truth, pred)["nmi"] == pytest.approx(want, rel=1e-9)
    assert full_report(truth, pred, tuple(CLASSES))["nmi"] == pytest.approx(want, rel=1e-9)


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
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(("report", ".report"))]


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


def _scored_csv(bench: Path, path: Path, wrong_every: int = 0) -> Path:
    """A submission with every score column: one-hot-ish scores, wrong on every n-th row."""
    lines = ["key,pred," + ",".join(f"score_{c}" for c in CLASSES) + ",fake_score"]
    for i, r in enumerate(_truth(bench)):
        label = (r["label"] + 1) % 3 if wrong_every and i % wrong_every == 0 else r["label"]
        scores = [0.8 if c == label else 0.1 for c in range(3)]
        lines.append(f"{r['key']},{CLASSES[label]},{','.join(map(str, scores))},{0.1 if label == 0 else 0.9}")
    return _write_csv(path, lines)


def test_out_writes_json_markdown_and_two_pngs(bench, tmp_path, capsys):
    import cv2

    sub = _scored_csv(bench, tmp_path / "sub.csv", wrong_every=4)
    out = tmp_path / "res" / "report.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--out", str(out),
                 "--bootstrap", "200", "--seed", "3"]) == 0
    report = json.loads(out.read_text())
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "report.confusion.png", "report.corruption.png", "report.json", "report.md"]
    for png in out.parent.glob("*.png"):
        image = cv2.imread(str(png))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    md = (tmp_path / "res" / "report.md").read_text()
    ci = report["ci"]
    assert ci["resamples"] == 200 and ci["seed"] == 3 and ci["level"] == 0.95
    assert ci["attribution_accuracy"][0] <= report["attribution_accuracy"] <= ci["attribution_accuracy"][1]
    line = (f"| Attribution accuracy | {report['attribution_accuracy']:.4f} | "
            f"[{ci['attribution_accuracy'][0]:.4f}, {ci['attribution_accuracy'][1]:.4f}] | "
            f"{report['chance']['attribution_accuracy']:.4f} |")
    assert line in md
    assert "## Per corruption x severity" in md and "![confusion matrix](report.confusion.png)" in md
    assert "multiple-attribution rate" in md
    scores = report["scores"]
    assert scores["detection_auc_from"] == "fake_score" and set(scores["auc_per_class"]) == set(CLASSES)
    # The same seed gives the same report; another seed other intervals.
    again = tmp_path / "again.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--out", str(again),
                 "--bootstrap", "200", "--seed", "3"]) == 0
    assert json.loads(again.read_text())["ci"] == ci


def test_perfect_and_constant_submissions_through_the_cli(bench, tmp_path, capsys):
    perfect = _scored_csv(bench, tmp_path / "perfect.csv")
    assert main(["--benchmark", str(bench), "--submission", str(perfect), "--bootstrap", "50"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["attribution_accuracy"] == report["nmi"] == report["detection_accuracy"] == 1.0
    assert report["ci"]["attribution_accuracy"] == [1.0, 1.0]
    assert report["scores"]["auc_macro"] == 1.0 and report["scores"]["detection_auc"] == 1.0
    assert report["scores"]["decentralised"]["multiple_attribution_rate"] == 0.0
    constant = _write_csv(tmp_path / "constant.csv",
                          ["key,pred"] + [f"{r['key']},sngan" for r in _truth(bench)])
    assert main(["--benchmark", str(bench), "--submission", str(constant), "--bootstrap", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["attribution_accuracy"] == pytest.approx(3 / 9)
    assert report["detection_accuracy"] == pytest.approx(6 / 9)  # every fake detected, no real
    assert report["nmi"] == 0.0 and report["ci"] is None and report["scores"] is None


def test_breakdowns_sum_back_to_the_totals(bench, tmp_path, capsys):
    sub = _scored_csv(bench, tmp_path / "sub.csv", wrong_every=3)
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--bootstrap", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("by_semantic", "by_corruption_seen", "clean_vs_corrupted", "by_corruption_severity"):
        parts = report[name].values()
        assert sum(p["count"] for p in parts) == report["count"], name
        for metric in ("attribution_accuracy", "detection_accuracy"):
            weighted = sum(p[metric] * p["count"] for p in parts) / report["count"]
            assert weighted == pytest.approx(report[metric]), (name, metric)


def test_not_a_benchmark_exits_2(tmp_path, capsys):
    sub = _write_csv(tmp_path / "sub.csv", ["key,pred", "a,real"])
    assert main(["--benchmark", str(tmp_path), "--submission", str(sub)]) == 2
    assert "manifest.parquet not found" in capsys.readouterr().err


def test_report_names_the_build_from_dataset_info(bench, tmp_path, capsys):
    (bench / "dataset_info.json").write_text(json.dumps(
        {"protocol": "attribution88", "protocol_version": "1.0", "config_sha256": "ab" * 32}))
    sub = _write_csv(tmp_path / "sub.csv", ["key,pred"] + [f"{r['key']},real" for r in _truth(bench)])
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--bootstrap", "0"]) == 0
    identity = json.loads(capsys.readouterr().out)["benchmark"]
    assert identity["protocol_version"] == "1.0" and identity["config_sha256"] == "ab" * 32
    assert len(identity["manifest_sha256"]) == 64
    (bench / "dataset_info.json").write_text("{broken")
    assert main(["--benchmark", str(bench), "--submission", str(sub)]) == 2
    assert "dataset_info.json: not JSON" in capsys.readouterr().err


def test_breakdown_groups_by_name(tmp_path):
    """Groups that differ in size and accuracy, so a swapped or mislabelled group shows."""
    # label, semantic seen, corruption, severity, predicted label
    table = [(0, True, "none", 0, 0), (1, True, "none", 0, 1), (2, True, "fog", 2, 2),
             (0, True, "fog", 2, 0), (1, True, "glass_blur", 4, 2), (2, False, "none", 0, 1),
             (1, False, "fog", 2, 0), (0, False, "none", 0, 0)]
    rows = []
    for i, (label, seen, corruption, severity, _) in enumerate(table):
        row = {n: None for n in MANIFEST_SCHEMA.names}
        row.update(key=f"{CLASSES[label]}-faces-s{i:08d}", split="test", label=label,
                   source=CLASSES[label], seen=seen, corruption=corruption, severity=severity,
                   corruption_seen=corruption != "glass_blur", shard="test-000000.tar", position=i)
        rows.append(row)
    write_manifest(rows, tmp_path / "manifest.parquet")
    (tmp_path / "classes.json").write_text(json.dumps({"classes": CLASSES}))
    sub = _write_csv(tmp_path / "sub.csv", ["key,pred"] + [f"{r['key']},{t[4]}" for r, t in zip(rows, table)])
    report = score(tmp_path, sub, resamples=0)

    def group(rows_in_group, attribution, detection):
        truth = np.array([table[i][0] for i in rows_in_group])
        pred = np.array([table[i][4] for i in rows_in_group])
        return {"count": len(rows_in_group), "attribution_accuracy": pytest.approx(attribution),
                "nmi": pytest.approx(normalized_mutual_info_score(truth, pred), abs=1e-12),
                "detection_accuracy": pytest.approx(detection)}

    assert report["by_semantic"] == {"seen": group([0, 1, 2, 3, 4], 4 / 5, 1.0),
                                     "unseen": group([5, 6, 7], 1 / 3, 2 / 3)}
    assert report["by_corruption_seen"] == {"clean": group([0, 1, 5, 7], 3 / 4, 1.0),
                                            "seen": group([2, 3, 6], 2 / 3, 2 / 3),
                                            "unseen": group([4], 0.0, 1.0)}
    assert report["clean_vs_corrupted"] == {"clean": group([0, 1, 5, 7], 3 / 4, 1.0),
                                            "corrupted": group([2, 3, 4, 6], 2 / 4, 3 / 4)}
    assert report["by_corruption_severity"] == {"none/0": group([0, 1, 5, 7], 3 / 4, 1.0),
                                                "fog/2": group([2, 3, 6], 2 / 3, 2 / 3),
                                                "glass_blur/4": group([4], 0.0, 1.0)}
