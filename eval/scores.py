"""Figures from a submission's score columns: ROC-AUCs and the decentralised reading.

ROC-AUC (sklearn `roc_auc_score`):
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
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from eval.metrics import REAL

THRESHOLD = 0.5


def _auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC, or None where it is undefined (no positive or no negative image)."""
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, score))


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
        actual = truth == j
        precision, recall, _, _ = precision_recall_fscore_support(
            actual, claims[:, j - 1], average="binary", zero_division=0)
        per_source[name] = {"accuracy": float(np.mean(actual == claims[:, j - 1])),
                            "precision": float(precision), "recall": float(recall),
                            "claim_rate": float(np.mean(claims[:, j - 1]))}
    out["decentralised"] = {
        "called_real_from": "fake_score" if fake_score is not None else "pred",
        "multiple_attribution_rate": float(np.mean(claimed_by > 1)),
        "self_contradiction_rate": float(np.mean(called_real & (claimed_by > 0))),
        "unclaimed_fake_rate": float(np.mean(~called_real & (claimed_by == 0))),
        "per_source": per_source,
    }
    return out
