"""Contingency-table figures against sklearn and against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, normalized_mutual_info_score

from eval.scoring.metrics import breakdown, breakdown_ids, contingency, figures, full_report


def _sklearn(truth, pred):
    return {"attribution_accuracy": accuracy_score(truth, pred),
            "nmi": normalized_mutual_info_score(truth, pred),
            "detection_accuracy": accuracy_score(truth == 0, pred == 0)}


def test_nmi_of_a_hand_made_table():
    truth, pred = np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1])
    # joint: (0,0)=1/2, (1,0)=1/4, (1,1)=1/4; truth marginal 1/2,1/2; pred marginal 3/4,1/4
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.25 * math.log(0.25 / (0.5 * 0.25))
    h_truth = math.log(2)
    h_pred = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    got = figures(contingency(truth, pred, 2)[0])
    assert got["nmi"] == pytest.approx(mi / ((h_truth + h_pred) / 2), rel=1e-12)
    assert got["attribution_accuracy"] == pytest.approx(0.75)
    assert got["detection_accuracy"] == pytest.approx(0.75)


@pytest.mark.parametrize("truth, pred, nmi", [
    ([0, 0, 1, 1], [1, 1, 0, 0], 1.0),  # a relabelling is a perfect clustering
    ([0, 0, 1, 1], [0, 1, 0, 1], 0.0),  # independent
    ([2, 2, 2], [2, 2, 2], 1.0),  # one class each: sklearn's perfect-match limit
    ([1, 1, 1, 1], [0, 1, 2, 1], 0.0),  # one true class: no information
])
def test_nmi_limit_cases_match_sklearn(truth, pred, nmi):
    truth, pred = np.array(truth), np.array(pred)
    assert figures(contingency(truth, pred, 3)[0])["nmi"] == pytest.approx(nmi, abs=1e-12)
    assert normalized_mutual_info_score(truth, pred) == pytest.approx(nmi, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_figures_match_sklearn_on_random_submissions(seed):
    rng = np.random.default_rng(seed)
    k, n = int(rng.integers(2, 7)), int(rng.integers(1, 400))
    truth = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < rng.random(), truth, rng.integers(0, k, n))
    got = figures(contingency(truth, pred, k)[0])
    for name, value in _sklearn(truth, pred).items():
        assert float(got[name]) == pytest.approx(value, abs=1e-12), name


def test_breakdown_matches_sklearn_per_group_and_sums_back():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 1000)
    pred = np.where(rng.random(1000) < 0.5, truth, rng.integers(0, 4, 1000))
    groups = rng.integers(0, 5, 1000)
    names = ["a", "b", "c", "d", "unused"]
    groups[groups == 4] = 0  # group "unused" stays empty and is left out
    parts = breakdown_ids(truth, pred, 4, groups, names)
    assert list(parts) == ["a", "b", "c", "d"]
    for g, name in enumerate(names[:4]):
        mask = groups == g
        assert parts[name]["count"] == mask.sum()
        for metric, value in _sklearn(truth[mask], pred[mask]).items():
            assert parts[name][metric] == pytest.approx(value, abs=1e-12)
    total = full_report(truth, pred, ("real", "a", "b", "c"))
    for metric in ("attribution_accuracy", "detection_accuracy"):
        weighted = sum(p[metric] * p["count"] for p in parts.values()) / 1000
        assert weighted == pytest.approx(total[metric])
    assert sum(p["count"] for p in parts.values()) == 1000
    by_string = breakdown(truth, pred, np.array(names)[groups])
    assert by_string == parts


def test_empty_table_gives_nan_not_an_error():
    got = figures(np.zeros((2, 3, 3), dtype=np.int64))
    assert np.isnan(got["attribution_accuracy"]).all() and np.isnan(got["nmi"]).all()


def test_full_report_per_class_and_chance_by_hand():
    truth = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 1, 0, 1, 2, 2])
    r = full_report(truth, pred, ("real", "a", "b"))
    assert r["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert r["per_class"]["b"]["precision"] == 0.5 and r["per_class"]["b"]["recall"] == 1.0
    assert r["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert r["chance"]["attribution_accuracy"] == pytest.approx(0.5)
    assert r["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
