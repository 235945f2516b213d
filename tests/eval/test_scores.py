"""Score-column figures: AUCs against sklearn, the decentralised reading by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from eval.scoring.scores import score_report

CLASSES = ("real", "a", "b")


def _random(seed, n=500, k=3, ties=True):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    scores = rng.random((n, k))
    scores[np.arange(n), truth] += rng.random(n)
    scores /= scores.sum(axis=1, keepdims=True)
    if ties:  # coarse scores: many ties, which both AUCs must count as one half
        scores = scores.round(1)
    return truth, scores, scores.argmax(axis=1)


@pytest.mark.parametrize("seed, ties", [(0, True), (1, False), (2, True)])
def test_aucs_match_sklearn(seed, ties):
    truth, scores, pred = _random(seed, ties=ties)
    fake = np.random.default_rng(seed).random(len(truth)).round(2)
    r = score_report(truth, pred, CLASSES, scores, fake)
    for i, c in enumerate(CLASSES):
        assert r["auc_per_class"][c] == pytest.approx(roc_auc_score(truth == i, scores[:, i]), abs=1e-12)
    assert r["auc_macro"] == pytest.approx(np.mean([roc_auc_score(truth == i, scores[:, i])
                                                    for i in range(3)]))
    assert r["detection_auc"] == pytest.approx(roc_auc_score(truth != 0, fake), abs=1e-12)
    assert r["detection_auc_from"] == "fake_score"
    without = score_report(truth, pred, CLASSES, scores, None)
    assert without["detection_auc"] == pytest.approx(roc_auc_score(truth != 0, 1 - scores[:, 0]), abs=1e-12)
    assert without["detection_auc_from"] == "1 - score_real"


def test_per_source_decisions_match_sklearn():
    truth, scores, pred = _random(4, ties=False)
    per_source = score_report(truth, pred, CLASSES, scores, None)["decentralised"]["per_source"]
    for j, c in enumerate(CLASSES[1:], start=1):
        p, r, _, _ = precision_recall_fscore_support(truth == j, scores[:, j] >= 0.5,
                                                     average="binary", zero_division=0)
        assert per_source[c]["precision"] == pytest.approx(p)
        assert per_source[c]["recall"] == pytest.approx(r)
        assert per_source[c]["accuracy"] == pytest.approx(np.mean((truth == j) == (scores[:, j] >= 0.5)))


def test_decentralised_rates_by_hand():
    truth = np.array([0, 1, 2, 1, 0])
    scores = np.array([
        [0.9, 0.6, 0.1],  # claimed by a; detector says real: a self-contradiction
        [0.1, 0.7, 0.8],  # claimed by a and b: multiple attribution
        [0.2, 0.1, 0.5],  # claimed by b only (0.5 claims)
        [0.3, 0.2, 0.2],  # claimed by nobody, detector says fake: unclaimed fake
        [0.9, 0.1, 0.1],  # real, unclaimed: consistent
    ])
    fake = np.array([0.2, 0.9, 0.8, 0.7, 0.1])
    pred = np.array([0, 2, 2, 0, 0])
    d = score_report(truth, pred, CLASSES, scores, fake)["decentralised"]
    assert d["called_real_from"] == "fake_score"
    assert d["multiple_attribution_rate"] == pytest.approx(1 / 5)
    assert d["self_contradiction_rate"] == pytest.approx(1 / 5)
    assert d["unclaimed_fake_rate"] == pytest.approx(1 / 5)
    assert d["per_source"]["a"] == {"accuracy": 3 / 5, "precision": 1 / 2, "recall": 1 / 2,
                                    "claim_rate": 2 / 5}
    # Without fake_score the detector is pred == real: rows 0, 3 and 4 are called real;
    # row 0 is claimed by a (contradiction), row 3 by nobody; rows 1, 2 are fake and claimed.
    d = score_report(truth, pred, CLASSES, scores, None)["decentralised"]
    assert d["called_real_from"] == "pred"
    assert d["self_contradiction_rate"] == pytest.approx(1 / 5)
    assert d["unclaimed_fake_rate"] == 0.0


def test_undefined_auc_is_none_and_no_scores_give_none():
    truth = np.array([0, 0, 1, 1])  # class b absent
    scores = np.full((4, 3), 1 / 3)
    r = score_report(truth, truth, CLASSES, scores, None)
    assert r["auc_per_class"]["b"] is None
    assert r["auc_per_class"]["a"] == 0.5  # all tied
    assert score_report(truth, truth, CLASSES, None, None) is None
    only_fake = score_report(truth, truth, CLASSES, None, np.array([0.1, 0.2, 0.8, 0.9]))
    assert only_fake == {"threshold": 0.5, "detection_auc": 1.0, "detection_auc_from": "fake_score"}


def test_perfect_scores():
    truth = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[truth]
    r = score_report(truth, truth, CLASSES, scores, (truth != 0).astype(float))
    assert r["auc_macro"] == 1.0 and r["detection_auc"] == 1.0
    d = r["decentralised"]
    assert d["multiple_attribution_rate"] == d["self_contradiction_rate"] == d["unclaimed_fake_rate"] == 0.0
