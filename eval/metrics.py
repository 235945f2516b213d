"""Attribution metrics as in the RepMix code: attribution accuracy, NMI, detection accuracy.

sklearn computes each figure; this module only decides what is compared with what. Class 0 is
real: detection asks only whether an image was called real or not, so a synthetic image
attributed to the wrong generator still counts as detected.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             normalized_mutual_info_score, precision_recall_fscore_support)

REAL = 0


def headline(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The paper's three figures for one set of images."""
    return {
        "count": int(len(truth)),
        "attribution_accuracy": float(accuracy_score(truth, pred)),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "detection_accuracy": float(accuracy_score(truth == REAL, pred == REAL)),
    }


def full_report(truth: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Headline figures plus balanced accuracy, per-class P/R/F1, confusion matrix, chance."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=labels, zero_division=0)
    return {
        **headline(truth, pred),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        # Chance: always answering the most frequent class (attribution, detection).
        "chance": {
            "attribution_accuracy": float(np.bincount(truth, minlength=len(classes)).max() / len(truth)),
            "detection_accuracy": float(max(np.mean(truth == REAL), np.mean(truth != REAL))),
            "nmi": 0.0,
        },
        "per_class": {classes[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                   "f1": float(f1[i]), "support": int(support[i])}
                      for i in labels},
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
    }


def breakdown(truth: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """Headline figures per group value (e.g. seen/unseen semantic), in sorted group order."""
    return {str(g): headline(truth[groups == g], pred[groups == g]) for g in sorted(set(groups.tolist()))}
