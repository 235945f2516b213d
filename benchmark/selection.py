"""Which sampled images a benchmark cell keeps.

Two rules, both on cached feature rows (numpy only):

* ``select_repmix`` (Bui et al. 2022): K-means the synthetic Inception
  features into ``clusters`` groups and keep, per group, the ``per_cluster``
  images nearest to any real image, so the kept set is both realistic and
  diverse.
* ``select_yu`` (Yu et al. 2019): keep the ``keep`` images whose LPIPS
  distance to their nearest real image is smallest.

Everything is deterministic: ties go to the lower index, nearest-neighbour
results do not depend on chunk sizes, and K-means runs single-threaded because
its float sums otherwise change with the thread count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "NearestResult",
    "Selection",
    "nearest_distances",
    "select_repmix",
    "select_yu",
]

# Relative error bound per feature dimension used to widen the candidate set of
# the matmul expansion; several float64 epsilons covers gemm rounding with room.
_EXPANSION_RTOL = 8 * np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class NearestResult:
    """Nearest reference row for each query row."""

    distance: np.ndarray  # float64 (N,): Euclidean, or squared if requested
    index: np.ndarray  # int64 (N,): row of ``reference``; ties -> lowest
    squared: bool


@dataclass(frozen=True, eq=False)
class Selection:
    """Outcome of a selection rule over N candidate images.

    ``kept`` lists the chosen rows in ascending order; the per-image arrays
    cover every candidate so a manifest can say why each one was or was not
    kept: its cluster (-1 where the rule has none), its distance to the nearest
    reference image and which one that was, and whether it was only kept to
    top up an undersized cluster.
    """

    method: str
    kept: np.ndarray  # int64 (K,), ascending
    cluster: np.ndarray  # int64 (N,)
    distance: np.ndarray  # float64 (N,)
    nearest: np.ndarray  # int64 (N,)
    filled: np.ndarray  # bool (N,)

    def __post_init__(self) -> None:
        for name in ("kept", "cluster", "distance", "nearest", "filled"):
            getattr(self, name).setflags(write=False)  # frozen means the arrays too

    @property
    def kept_mask(self) -> np.ndarray:
        mask = np.zeros(len(self.distance), dtype=bool)
        mask[self.kept] = True
        return mask

    @property
    def reason(self) -> np.ndarray:
        """Per image: 'cluster' (best in its cluster), 'fill', 'nearest' (Yu rule) or ''."""
        out = np.full(len(self.distance), "", dtype=object)
        primary = "nearest" if self.method == "yu" else "cluster"
        out[self.kept] = primary
        out[self.filled] = "fill"
        return out


def _check_features(name: str, value: np.ndarray) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) array; got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{name} must hold floats; got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    # Keep the caller's precision: LPIPS embeddings can be ~350k wide, so a
    # float64 copy of the whole set is avoided and tiles are widened instead.
    return arr


def _check_pair(q_name: str, query: np.ndarray, r_name: str, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = _check_features(q_name, query)
    r = _check_features(r_name, reference)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"{q_name} has dim {q.shape[1]} but {r_name} has dim {r.shape[1]}")
    return q, r


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def nearest_distances(
    query: np.ndarray, reference: np.ndarray, *, chunk: int = 4096, squared: bool = False
) -> NearestResult:
    """Distance from each query row to its nearest reference row.

    Candidates come from the float64 matmul expansion ||a||^2 - 2ab + ||b||^2,
    computed in (chunk x chunk) tiles so memory stays bounded. The expansion's
    rounding depends on BLAS blocking, so every pair within its error bound of
    the running minimum is re-scored directly as sum((a - b)^2); that makes the
    answer (value and index) independent of ``chunk`` and accurate for
    near-duplicates, where the expansion cancels catastrophically.
    ``squared=True`` returns squared L2, which for LPIPS embeddings is LPIPS.
    """
    q, r = _check_pair("query", query, "reference", reference)
    chunk = _check_count("chunk", chunk)
    n, dim = q.shape
    r_sq = np.concatenate([_row_sq(r[i : i + chunk]) for i in range(0, len(r), chunk)])
    r_sq_max = r_sq.max()

    best = np.full(n, np.inf)
    best_idx = np.full(n, -1, dtype=np.int64)
    for q0 in range(0, n, chunk):
        q_tile = q[q0 : q0 + chunk].astype(np.float64)
        q_sq = _row_sq(q_tile)
        # Absolute error bound of the expansion for each query row.
        slack = _EXPANSION_RTOL * dim * (q_sq + r_sq_max) + np.finfo(np.float64).tiny
        approx_min = np.full(len(q_tile), np.inf)
        for r0 in range(0, len(r), chunk):
            r_tile = r[r0 : r0 + chunk].astype(np.float64)
            approx = q_sq[:, None] - 2.0 * (q_tile @ r_tile.T) + r_sq[None, r0 : r0 + chunk]
            np.minimum(approx_min, approx.min(axis=1), out=approx_min)
            # Thresholds only shrink, so every pair that could be the exact
            # minimum is re-scored at some tile; the rest cannot win.
            rows, cols = np.nonzero(approx <= (approx_min + slack)[:, None])
            # Re-score in bounded pieces: duplicated references can make many candidates.
            for c0 in range(0, len(rows), chunk):
                rr, cc = rows[c0 : c0 + chunk], cols[c0 : c0 + chunk]
                diff = q_tile[rr] - r_tile[cc]
                # Pairwise row sums are the same for a pair wherever it sits in the batch.
                exact = (diff * diff).sum(axis=1)
                _merge_best(best, best_idx, rr + q0, cc + r0, exact)
    dist = best if squared else np.sqrt(best)
    return NearestResult(distance=dist, index=best_idx, squared=squared)


def _row_sq(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64, copy=False)
    return np.einsum("ij,ij->i", rows, rows)


def _merge_best(best: np.ndarray, best_idx: np.ndarray, rows: np.ndarray, cols: np.ndarray, exact: np.ndarray) -> None:
    """Fold (row, col, value) candidates into the running (value, lowest index) minimum."""
    if len(rows) == 0:
        return
    # Sort by row, then value, then column: the first entry per row is its winner.
    order = np.lexsort((cols, exact, rows))
    rows, cols, exact = rows[order], cols[order], exact[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    rows, cols, exact = rows[first], cols[first], exact[first]
    better = (exact < best[rows]) | ((exact == best[rows]) & (cols < best_idx[rows]))
    best[rows[better]] = exact[better]
    best_idx[rows[better]] = cols[better]


def _smallest(distance: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` candidates with the smallest distance, ties to the lower index."""
    # candidates are ascending and the sort is stable, so equal distances keep index order.
    order = np.argsort(distance[candidates], kind="stable")
    return candidates[order[:count]]


def _kmeans_labels(features: np.ndarray, clusters: int, seed: int, init: str) -> np.ndarray:
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    # Measured: cluster centres differ in the last bits between 1 and 2 threads
    # (OpenMP partial sums), which can flip borderline labels; one thread is exact.
    with threadpool_limits(limits=1):
        km = KMeans(n_clusters=clusters, init=init, n_init=1, random_state=seed)
        labels = km.fit_predict(features)
    return labels.astype(np.int64)


def select_repmix(
    features: np.ndarray,
    reference: np.ndarray,
    *,
    clusters: int,
    per_cluster: int,
    seed: int,
    init: Literal["k-means++", "random"] = "random",
    fill: bool = True,
) -> Selection:
    """RepMix rule: per K-means cluster, the ``per_cluster`` images nearest to a real one.

    With ``fill`` the kept set always has exactly clusters * per_cluster rows:
    clusters smaller than per_cluster are topped up with the globally nearest
    leftovers (flagged in ``Selection.filled``).
    """
    x, ref = _check_pair("features", features, "reference", reference)
    clusters = _check_count("clusters", clusters)
    per_cluster = _check_count("per_cluster", per_cluster)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random'; got {init!r}")
    n = len(x)
    if clusters > n:
        raise ValueError(f"clusters={clusters} exceeds the number of features ({n})")
    target = clusters * per_cluster
    if fill and n < target:
        raise ValueError(
            f"fill needs clusters*per_cluster={target} images but features has only {n} rows"
        )

    # float64 so centroid updates do not drift with the input precision.
    labels = _kmeans_labels(x.astype(np.float64), clusters, int(seed), init)
    near = nearest_distances(x, ref)
    all_rows = np.arange(n, dtype=np.int64)
    kept = np.concatenate(
        [np.empty(0, dtype=np.int64)]
        + [_smallest(near.distance, all_rows[labels == c], per_cluster) for c in range(clusters)]
    )
    filled = np.zeros(n, dtype=bool)
    if fill and len(kept) < target:
        leftovers = np.setdiff1d(all_rows, kept, assume_unique=True)
        extra = _smallest(near.distance, leftovers, target - len(kept))
        filled[extra] = True
        kept = np.concatenate([kept, extra])
    return Selection(
        method="repmix",
        kept=np.sort(kept),
        cluster=labels,
        distance=near.distance,
        nearest=near.index,
        filled=filled,
    )


def select_yu(embeddings: np.ndarray, reference: np.ndarray, *, keep: int) -> Selection:
    """Yu et al. rule: the ``keep`` images with the smallest LPIPS distance to a real one.

    ``embeddings``/``reference`` are LPIPSEmbedding rows, whose squared L2 is
    LPIPS, so ``Selection.distance`` holds LPIPS distances.
    """
    x, ref = _check_pair("embeddings", embeddings, "reference", reference)
    keep = _check_count("keep", keep)
    n = len(x)
    if keep > n:
        raise ValueError(f"keep={keep} exceeds the number of embeddings ({n})")
    near = nearest_distances(x, ref, squared=True)
    kept = _smallest(near.distance, np.arange(n, dtype=np.int64), keep)
    return Selection(
        method="yu",
        kept=np.sort(kept),
        cluster=np.full(n, -1, dtype=np.int64),
        distance=near.distance,
        nearest=near.index,
        filled=np.zeros(n, dtype=bool),
    )
