"""Attribution metrics as in the RepMix code: attribution accuracy, NMI, detection accuracy.

Class 0 is real: detection asks only whether an image was called real or not, so a synthetic
image attributed to the wrong generator still counts as detected.

Two paths give the same figures. `headline` and `full_report` call sklearn on the rows (the
reference). `figures` computes the three headline figures from contingency tables (truth x
prediction counts), vectorised over any leading axes: one `np.bincount` gives the tables of
every group of a breakdown at once, and the bootstrap evaluates a thousand resampled tables in
one call. The tests hold `figures` to sklearn on random submissions.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                             normalized_mutual_info_score, precision_recall_fscore_support)

REAL = 0
HEADLINE = ("attribution_accuracy", "nmi", "detection_accuracy")


def headline(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The paper's three figures for one set of images."""
    return {
        "count": int(len(truth)),
        "attribution_accuracy": float(accuracy_score(truth, pred)),
        "nmi": float(normalized_mutual_info_score(truth, pred)),
        "detection_accuracy": float(accuracy_score(truth == REAL, pred == REAL)),
    }


def chance(truth: np.ndarray, classes: int) -> dict[str, float]:
    """Chance levels: always answering the most frequent class (attribution, detection); NMI 0."""
    return {
        "attribution_accuracy": float(np.bincount(truth, minlength=classes).max() / len(truth)),
        "nmi": 0.0,
        "detection_accuracy": float(max(np.mean(truth == REAL), np.mean(truth != REAL))),
    }


def full_report(truth: np.ndarray, pred: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Headline figures plus balanced accuracy, per-class P/R/F1, confusion matrix, chance."""
    labels = list(range(len(classes)))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, pred, labels=labels, zero_division=0)
    return {
        **headline(truth, pred),
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)),
        "chance": chance(truth, len(classes)),
        "per_class": {classes[i]: {"precision": float(precision[i]), "recall": float(recall[i]),
                                   "f1": float(f1[i]), "support": int(support[i])}
                      for i in labels},
        "confusion_matrix": confusion_matrix(truth, pred, labels=labels).tolist(),
    }


def contingency(truth: np.ndarray, pred: np.ndarray, classes: int,
                groups: np.ndarray | None = None, count: int = 1) -> np.ndarray:
    """Counts (count, classes, classes) of (group, truth, pred); `groups` holds ids 0..count-1."""
    cell = truth.astype(np.int64) * classes + pred
    if groups is not None:
        cell = cell + groups.astype(np.int64) * (classes * classes)
    return np.bincount(cell, minlength=count * classes * classes).reshape(count, classes, classes)


def figures(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Attribution accuracy, NMI and detection accuracy of contingency tables (..., k, k).

    NMI follows sklearn's `normalized_mutual_info_score` (arithmetic mean of the entropies,
    natural log): 1 when truth and prediction each hold a single class, 0 when the mutual
    information is 0, otherwise MI / mean(H(truth), H(pred)). A table with no rows gives NaN.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = counts / n[..., None, None]
        rows, cols = p.sum(axis=-1), p.sum(axis=-2)
        # Ratios of integer counts, so that a perfect submission scores exactly 1.
        accuracy = np.trace(counts, axis1=-2, axis2=-1) / n
        # Detection: real called real plus not-real called not-real.
        detection = (counts[..., REAL, REAL] + counts[..., 1:, 1:].sum(axis=(-2, -1))) / n
        outer = rows[..., :, None] * cols[..., None, :]
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(p > 0, outer, 1.0)), 0.0)
        mi = np.clip(terms.sum(axis=(-2, -1)), 0.0, None)
        h_rows = -np.where(rows > 0, rows * np.log(np.where(rows > 0, rows, 1.0)), 0.0).sum(axis=-1)
        h_cols = -np.where(cols > 0, cols * np.log(np.where(cols > 0, cols, 1.0)), 0.0).sum(axis=-1)
        one_each = ((rows > 0).sum(axis=-1) == 1) & ((cols > 0).sum(axis=-1) == 1)
        # MI below float noise is 0, as sklearn rounds it; the single-class case is a perfect match.
        nmi = np.where(mi <= 1e-12, 0.0, mi / np.maximum((h_rows + h_cols) / 2, np.finfo(float).eps))
        nmi = np.where(one_each, 1.0, nmi)
    empty = n == 0
    return {"attribution_accuracy": np.where(empty, np.nan, accuracy),
            "nmi": np.where(empty, np.nan, nmi),
            "detection_accuracy": np.where(empty, np.nan, detection)}


def breakdown_ids(truth: np.ndarray, pred: np.ndarray, classes: int, groups: np.ndarray,
                  names: list[str]) -> dict[str, dict]:
    """Headline figures per group, `groups` holding ids into `names`; empty groups left out."""
    tables = contingency(truth, pred, classes, groups, len(names))
    values = figures(tables)
    sizes = tables.sum(axis=(1, 2))
    return {names[g]: {"count": int(sizes[g]), **{m: float(values[m][g]) for m in HEADLINE}}
            for g in sorted(range(len(names)), key=lambda g: names[g]) if sizes[g]}


def breakdown(truth: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, dict]:
    """Headline figures per group value (e.g. seen/unseen semantic), in sorted group order."""
    names, ids = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    classes = int(max(truth.max(initial=0), pred.max(initial=0))) + 1
    return breakdown_ids(truth, pred, classes, ids, [str(n) for n in names])
