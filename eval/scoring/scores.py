"""Figures from a submission's score columns: ROC-AUCs and the decentralised reading.

ROC-AUC, computed as the Mann-Whitney statistic from tie-averaged ranks (scipy `rankdata`):
the same number as sklearn's `roc_auc_score` (the tests hold it to it), at about half the cost
on a million rows, where sklearn's stable sort and threshold curve are the scorer's largest
single expense (one call per class):
- per class, one-vs-rest: `score_<class>` ranks the images of that class above the others;
- detection: `fake_score` ranks synthetic images above real ones. Without `fake_score` but
  with class scores, `1 - score_real` stands in for it (the report says which was used).

The decentralised reading follows Khoo, Phan and Lim, "Transferable Class-Modelling for
Decentralized Source Attribution of GAN-Generated Images" (arXiv:2203.09777, 2022), who recast
attribution as independent binary problems, one per source, beside a real/fake detector.
Each source (every class but real) claims an image when its `score_<class>` is >= 0.5.
The detector calls an image real when `fake_score` < 0.5, or, without `fake_score`, when
`pred` is real. From these:
- multiple-attribution rate: fraction of images claimed by more than one source;
- self-contradiction rate: fraction called real by the detector yet claimed by a source;
- unclaimed-fake rate: fraction called fake by the detector but claimed by no source;
- per source: accuracy, precision and recall of its binary decision against "is this source".
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from eval.scoring.metrics import REAL

THRESHOLD = 0.5


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC, or None where it is undefined (no positive or no negative image)."""
    positives = int(np.count_nonzero(positive))
    negatives = len(positive) - positives
    if positives == 0 or negatives == 0:
        return None
    # Probability that a positive outranks a negative, ties counting one half.
    rank_sum = float(rankdata(score)[positive].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def score_report(truth: np.ndarray, pred: np.ndarray, classes: tuple[str, ...],
                 class_scores: np.ndarray | None, fake_score: np.ndarray | None) -> dict | None:
    """The score-column figures, or None when the submission has no score column."""
    if class_scores is None and fake_score is None:
        return None
    is_fake = truth != REAL
    if fake_score is not None:
        detection_score, source = fake_score, "fake_score"
    else:
        detection_score, source = 1.0 - class_scores[:, REAL], "1 - score_real"
    out: dict = {"threshold": THRESHOLD, "detection_auc": _auc(is_fake, detection_score),
                 "detection_auc_from": source}
    if class_scores is None:
        return out
    aucs = {c: _auc(truth == i, class_scores[:, i]) for i, c in enumerate(classes)}
    defined = [a for a in aucs.values() if a is not None]
    out["auc_per_class"] = aucs
    out["auc_macro"] = float(np.mean(defined)) if defined else None

    claims = class_scores[:, 1:] >= THRESHOLD  # (n, sources): every class but real
    claimed_by = claims.sum(axis=1)
    called_real = fake_score < THRESHOLD if fake_score is not None else pred == REAL
    per_source = {}
    for j, name in enumerate(classes[1:], start=1):
        actual, claimed = truth == j, claims[:, j - 1]
        hits = int(np.count_nonzero(actual & claimed))
        n_claimed, n_actual = int(np.count_nonzero(claimed)), int(np.count_nonzero(actual))
        # Precision and recall are 0 where undefined, as sklearn's zero_division=0.
        per_source[name] = {"accuracy": float(np.mean(actual == claimed)),
                            "precision": hits / n_claimed if n_claimed else 0.0,
                            "recall": hits / n_actual if n_actual else 0.0,
                            "claim_rate": n_claimed / len(truth)}
    out["decentralised"] = {
        "called_real_from": "fake_score" if fake_score is not None else "pred",
        "multiple_attribution_rate": float(np.mean(claimed_by > 1)),
        "self_contradiction_rate": float(np.mean(called_real & (claimed_by > 0))),
        "unclaimed_fake_rate": float(np.mean(~called_real & (claimed_by == 0))),
        "per_source": per_source,
    }
    return out
