"""Which sampled images a benchmark cell keeps.

Two rules, both on cached feature rows (float16, float32 or float64; numpy,
with torch for a CUDA device):

* ``select_repmix`` (Bui et al. 2022): K-means the synthetic Inception
  features into ``clusters`` groups and keep, per group, the ``per_cluster``
  images nearest to any real image, so the kept set is both realistic and
  diverse.
* ``select_yu`` (Yu et al. 2019): keep the ``keep`` images whose LPIPS
  distance to their nearest real image is smallest.

Nearest distances are exact and deterministic. A float32 matmul (on the GPU
when torch sees one) only proposes candidates: every pair within a proven
float32 error bound of a row's best is re-scored as sum((a - b)^2) in float64
on the CPU, ties to the lower index. So the distances and indices equal a
brute-force float64 search whatever the chunk size, BLAS thread count or
device; rows wider than 16k (LPIPS embeddings) use float64 tiles instead.

K-means (protocol 1.2.0) follows faiss's ``Kmeans`` recipe rather than a
full-data fit: centroids are fitted by Lloyd's algorithm on a seeded sample
of 256 rows per centroid (25.6k of 100k at k=100), for at most 25 iterations
(stopping early once no label changes), and then every row is assigned to
its exact nearest centroid. The assignment uses the exact search above and
the centroid means are float64 sums in row order (no BLAS), so the labels do
not depend on the thread count or the device. Earlier builds (protocol
< 1.2.0) fitted scikit-learn's KMeans on every row in float64; the labels,
and therefore which samples a cell keeps, differ from those builds; the
subsample makes K-means cost nearly flat in N (benchmarks/selection_scale.py). The released RepMix code lists both
scikit-learn 0.24.2 and faiss-gpu 1.6.3 in its requirements
(TuBui/image_attribution, dependencies/requirements.txt) but does not
include the selection script, so its clustering library is not known.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = [
    "KMeansResult",
    "NearestResult",
    "Selection",
    "keep_per_cluster",
    "kmeans",
    "nearest_distances",
    "select_repmix",
    "select_yu",
]

# Relative error bound per feature dimension of the float64 expansion (the wide-feature
# path); several float64 epsilons covers gemm rounding with room.
_EXPANSION_RTOL = 8 * np.finfo(np.float64).eps
# Up to this width the candidate search runs in float32. Its error bound grows with the
# width (gamma_n = n*u/(1-n*u)); past this, near-ties would make most pairs candidates.
_FLOAT32_MAX_DIM = 16_384
# A float32 strip (query rows x all reference rows) is kept under this many bytes.
_STRIP_BYTES = 128 << 20
_U32 = float(np.finfo(np.float32).eps) / 2  # unit roundoff of float32
_U64 = float(np.finfo(np.float64).eps) / 2
# Beyond this squared centred magnitude times the width, float32 products could overflow.
_FLOAT32_SAFE = 2.0**100
# K-means defaults, as faiss's Kmeans: 256 sampled rows per centroid, 25 Lloyd iterations.
KMEANS_SAMPLE_PER_CLUSTER = 256
KMEANS_ITERATIONS = 25


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


def _check_kmeans(seed: int, init: str, clusters: int, rows: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer; got {seed!r}")
    if init not in ("k-means++", "random"):
        raise ValueError(f"init must be 'k-means++' or 'random'; got {init!r}")
    if clusters > rows:
        raise ValueError(f"clusters={clusters} exceeds the number of features ({rows})")


def _check_count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    return int(value)


def nearest_distances(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    chunk: int = 4096,
    squared: bool = False,
    device: str | None = None,
) -> NearestResult:
    """Distance from each query row to its nearest reference row, exactly.

    "Exactly" means: the value is sum((a - b)^2) in float64 for the winning
    pair, and the winner is the reference row with the smallest such value
    (ties to the lowest index), as a brute-force float64 search would give.
    A fast matmul only proposes candidates: every pair whose approximate
    distance is within a proven error bound of the row's approximate minimum
    is re-scored directly, so the answer does not depend on ``chunk``, the
    BLAS thread count or the device, and near-duplicates (where the expansion
    ||a||^2 - 2ab + ||b||^2 cancels) stay exact.

    Up to ``_FLOAT32_MAX_DIM`` features the candidate matmul is float32, on
    CUDA through torch when ``device`` is 'cuda' (None: CUDA if torch sees one,
    else numpy on the CPU); wider rows (LPIPS embeddings) use float64 tiles.
    ``squared=True`` returns squared L2, which for LPIPS embeddings is LPIPS.
    """
    q, r = _check_pair("query", query, "reference", reference)
    chunk = _check_count("chunk", chunk)
    if q.shape[1] > _FLOAT32_MAX_DIM:
        best, best_idx = _nearest_float64(q, r, chunk)
    else:
        best, best_idx = _nearest_float32(q, r, chunk, _resolve_device(device))
    dist = best if squared else np.sqrt(best)
    return NearestResult(distance=dist, index=best_idx, squared=squared)


def _resolve_device(device: str | None) -> str | None:
    """None -> CUDA when torch has one, else numpy; 'cpu' -> numpy; anything else is torch's."""
    if device is None:
        try:
            import torch
        except ImportError:  # numpy alone is enough on the CPU
            return None
        return "cuda" if torch.cuda.is_available() else None
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda'; got {device!r}")
    return None if device == "cpu" else device


def _nearest_index(
    q: np.ndarray, r: np.ndarray, device: str | None, *, prepared: _Queries | None = None, chunk: int = 4096
) -> np.ndarray:
    """Only the nearest reference row (K-means assignment): a lone candidate needs no re-scoring."""
    if q.shape[1] > _FLOAT32_MAX_DIM:
        return _nearest_float64(q, r, chunk)[1]
    return _nearest_float32(q, r, chunk, device, distances=False, prepared=prepared)[1]


@dataclass(frozen=True, eq=False)
class _Queries:
    """Query rows centred once in float32, for a loop that searches them again and again."""

    centre: np.ndarray  # float64 (dim,), a float32 value
    q32: np.ndarray  # float32 (N, dim): q - centre
    q_sq: np.ndarray  # float64 (N,): |q32|^2
    peak: float  # max |q32|


def _prepare_queries(q: np.ndarray, chunk: int = 4096) -> _Queries:
    centre = _float32_centre(q)
    q32 = _centred32(q, centre, chunk)
    return _Queries(centre=centre, q32=q32, q_sq=_row_sq(q32), peak=_peak(q32))


def _peak(rows32: np.ndarray) -> float:
    return max(-float(rows32.min()), float(rows32.max()))  # no |rows| temporary


def _float32_safe(peak: float, dim: int) -> bool:
    # inf (a float32 overflow while centring) fails too.
    return peak * peak * dim <= _FLOAT32_SAFE


def _float32_centre(rows: np.ndarray) -> np.ndarray:
    # Any centre is correct (the bound uses the centred norms); the mean keeps them small.
    # Averaged in the rows' own precision: a float64 cast of every row costs seconds.
    return np.asarray(rows.mean(axis=0)).astype(np.float32).astype(np.float64)


def _nearest_float32(
    q: np.ndarray,
    r: np.ndarray,
    chunk: int,
    device: str | None,
    *,
    distances: bool = True,
    prepared: _Queries | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n, dim = q.shape
    # Centring shrinks the norms the error bound scales with; distances do not change,
    # and the re-scoring below uses the original rows. The centre is a float32 value, so
    # float32 rows subtract it with one rounding in float32 arithmetic.
    centre = _float32_centre(r) if prepared is None else prepared.centre
    r32 = _centred32(r, centre, chunk)
    r_sq = _row_sq(r32)
    r_peak = _peak(r32)
    if not _float32_safe(max(r_peak, 0.0 if prepared is None else prepared.peak), dim):
        return _nearest_float64(q, r, chunk)
    # |approx - exact| for any pair of a query row, in squared-distance units: the float32
    # dot product q'.r' - |r'|^2/2 over at most dim + 8 terms (gamma_{dim+8} (|q'||r'| +
    # |r'|^2/2) per Higham 3.5, any summation order, FMA or not; doubled: <= 2 gamma
    # (|q'|^2 + |r'|^2)), the float32 rounding of the centred rows and of |r'|^2/2 and a
    # separate subtraction (< 16u (|q'|^2 + |r'|^2)), the float64 re-scoring (gamma_n in
    # float64) and underflow.
    gamma32 = (dim + 8) * _U32 / (1 - (dim + 8) * _U32)
    gamma64 = dim * _U64 / (1 - dim * _U64)
    rel = 2 * gamma32 + 16 * _U32 + 4 * gamma64
    absolute = dim * 2.0**-120
    r_sq_max = float(r_sq.max())
    half_r_sq = (r_sq / 2).astype(np.float32)
    strip = max(1, min(chunk, _STRIP_BYTES // (4 * len(r))))
    scorer = _Scorer(r32, half_r_sq, device, strip)

    best = np.full(n, np.inf)
    best_idx = np.full(n, -1, dtype=np.int64)
    q_buf = np.empty((min(strip, n), dim), dtype=np.float32) if prepared is None else None
    for q0 in range(0, n, strip):
        q_rows = q[q0 : q0 + strip]
        if prepared is None:
            q32 = _centred32(q_rows, centre, chunk, out=q_buf)
            if not _float32_safe(max(r_peak, _peak(q32)), dim):
                return _nearest_float64(q, r, chunk)  # start again: nothing is returned half-done
            q_sq = _row_sq(q32)
        else:
            q32, q_sq = prepared.q32[q0 : q0 + strip], prepared.q_sq[q0 : q0 + strip]
        bound = rel * (q_sq + r_sq_max) + absolute
        # Strip values s = |r'|^2/2 - q'.r', so |q - r|^2 ~ |q'|^2 + 2s within `bound`:
        # the exact winner's s is at most the row's minimum s plus `bound`.
        rows, cols = scorer.candidates(q32, bound)
        if not distances:
            # A row with one candidate has its winner; its distance is left as NaN.
            lone = np.bincount(rows, minlength=len(q32))[rows] == 1
            best[rows[lone] + q0] = np.nan
            best_idx[rows[lone] + q0] = cols[lone]
            rows, cols = rows[~lone], cols[~lone]
        for c0 in range(0, len(rows), chunk):
            rr, cc = rows[c0 : c0 + chunk], cols[c0 : c0 + chunk]
            diff = q_rows[rr].astype(np.float64) - r[cc].astype(np.float64)
            # Row sums of a contiguous 2-D array: the same value wherever the pair sits.
            exact = (diff * diff).sum(axis=1)
            _merge_best(best, best_idx, rr + q0, cc, exact)
    return best, best_idx


def _centred32(rows: np.ndarray, centre: np.ndarray, chunk: int, out: np.ndarray | None = None) -> np.ndarray:
    """float32 rows - centre, each entry the difference rounded once (or twice from float64)."""
    out = np.empty(rows.shape, dtype=np.float32) if out is None else out[: len(rows)]
    if rows.dtype.itemsize <= 4:  # float16/32 widen exactly; float32 subtraction rounds once
        np.subtract(rows, centre.astype(np.float32), out=out, dtype=np.float32)
        return out
    for i in range(0, len(rows), chunk):
        out[i : i + chunk] = rows[i : i + chunk].astype(np.float64) - centre
    return out


class _Scorer:
    """Candidate pairs of a float32 strip, by numpy on the CPU or by torch on a device."""

    def __init__(self, r32: np.ndarray, half_r_sq: np.ndarray, device: str | None, strip: int):
        self._device = device
        if device is None:
            # The gemm itself gives -s: each query row gets a trailing 1 (zero-padded to a
            # multiple of 8 columns) and the (dim, M) contiguous reference a row of -|r'|^2/2,
            # which saves a full pass over the strip; the NN layout measured ~20% faster too.
            width = -(-(r32.shape[1] + 1) // 8) * 8
            self._rT = np.zeros((width, len(r32)), dtype=np.float32)
            self._rT[: r32.shape[1]] = r32.T
            self._rT[r32.shape[1]] = -half_r_sq
            self._q = np.zeros((strip, width), dtype=np.float32)
            self._q[:, r32.shape[1]] = 1.0
            # Buffers reused by every strip: fresh ones would page-fault each time.
            self._buf = np.empty((strip, len(r32)), dtype=np.float32)
            self._mask = np.empty((strip, len(r32)), dtype=bool)
            return
        import torch

        self._r32 = torch.from_numpy(r32).to(device)
        self._half = torch.from_numpy(half_r_sq).to(device)

    def candidates(self, q32: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._device is None:
            n, dim = q32.shape
            q_aug = self._q[:n]
            q_aug[:, :dim] = q32
            neg = np.matmul(q_aug, self._rT, out=self._buf[:n])  # -s
            thr = _threshold(-neg.max(axis=1), bound)
            mask = np.greater_equal(neg, -thr[:, None], out=self._mask[:n])
            rows, cols = np.nonzero(mask)
            return rows.astype(np.int64), cols.astype(np.int64)
        import torch

        with _full_float32_matmul(torch):
            tq = torch.from_numpy(q32).to(self._device)
            s = torch.addmm(self._half[None, :], tq, self._r32.T, beta=1, alpha=-1)
        thr = _threshold(s.min(dim=1).values.cpu().numpy(), bound)
        pairs = torch.nonzero(s <= torch.from_numpy(thr).to(self._device)[:, None]).cpu().numpy()
        return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _threshold(row_min: np.ndarray, bound: np.ndarray) -> np.ndarray:
    # Rounded up to the next float32 so casting the threshold cannot drop a candidate.
    thr = (row_min.astype(np.float64) + bound).astype(np.float32)
    return np.nextafter(thr, np.float32(np.inf))


class _full_float32_matmul:
    """TF32 would void the float32 error bound: keep full precision for the block."""

    def __init__(self, torch):
        self._torch = torch

    def __enter__(self):
        t = self._torch
        self._saved = (t.get_float32_matmul_precision(), t.backends.cuda.matmul.allow_tf32)
        t.set_float32_matmul_precision("highest")
        t.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        t = self._torch
        t.set_float32_matmul_precision(self._saved[0])
        t.backends.cuda.matmul.allow_tf32 = self._saved[1]


def _nearest_float64(q: np.ndarray, r: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 expansion in (chunk x chunk) tiles, for rows too wide for float32 candidates."""
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
    return best, best_idx


def _row_sq(rows: np.ndarray, block: int = 256) -> np.ndarray:
    # In small blocks: a float64 copy of a whole feature set costs more than the sums.
    out = np.empty(len(rows))
    for i in range(0, len(rows), block):
        part = rows[i : i + block].astype(np.float64, copy=False)
        out[i : i + block] = np.einsum("ij,ij->i", part, part)
    return out


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


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """Centroids fitted on a seeded subsample, and every row's nearest centroid."""

    centroids: np.ndarray  # float64 (clusters, dim)
    labels: np.ndarray  # int64 (N,): nearest centroid of every row; ties -> lowest
    sample: np.ndarray  # int64 (S,): ascending rows the centroids were fitted on
    iterations: int  # Lloyd iterations run (fewer than asked once labels stop changing)


def kmeans(
    features: np.ndarray,
    clusters: int,
    *,
    seed: int,
    init: Literal["k-means++", "random"] = "random",
    iterations: int = KMEANS_ITERATIONS,
    sample_per_cluster: int = KMEANS_SAMPLE_PER_CLUSTER,
    device: str | None = None,
) -> KMeansResult:
    """Lloyd's K-means fitted on a seeded subsample, then every row assigned.

    As faiss's ``Kmeans``: at most ``sample_per_cluster * clusters`` rows
    (drawn without replacement with ``seed``) train the centroids for at most
    ``iterations`` rounds, then all rows go to their nearest centroid. Each
    assignment is an exact ``nearest_distances`` search, and centroids are
    float64 means summed in row order by numpy, so the result does not
    depend on the thread count or the device. An emptied cluster restarts at
    the sampled row farthest from its centroid (ties to the lower row).
    """
    x = _check_features("features", features)
    clusters = _check_count("clusters", clusters)
    iterations = _check_count("iterations", iterations)
    sample_per_cluster = _check_count("sample_per_cluster", sample_per_cluster)
    _check_kmeans(seed, init, clusters, len(x))
    n = len(x)
    device = _resolve_device(device)
    rng = np.random.default_rng(int(seed))
    size = min(n, sample_per_cluster * clusters)
    sample = np.arange(n, dtype=np.int64) if size == n else np.sort(rng.choice(n, size, replace=False))
    xs = x[sample]
    centroids = _kmeans_init(xs, clusters, rng, init)
    labels = None
    done = 0
    prepared = _prepare_queries(xs)  # the sample is searched once per iteration
    for done in range(1, iterations + 1):
        assigned = _nearest_index(xs, centroids, device, prepared=prepared)
        if labels is not None and np.array_equal(assigned, labels):
            break  # a fixed point: the update would give the same centroids
        labels = assigned
        centroids = _update_centroids(xs, labels, centroids)
    final = _nearest_index(x, centroids, device)
    return KMeansResult(centroids=centroids, labels=final, sample=sample, iterations=done)


def _kmeans_init(xs: np.ndarray, clusters: int, rng: np.random.Generator, init: str) -> np.ndarray:
    if init == "random":
        return xs[np.sort(rng.choice(len(xs), clusters, replace=False))].astype(np.float64)
    # k-means++ (Arthur & Vassilvitskii 2007): each next centre drawn with probability
    # proportional to the squared distance to the nearest centre so far.
    chosen = [int(rng.integers(len(xs)))]
    d2 = _sq_dist_to(xs, xs[chosen[0]])
    for _ in range(1, clusters):
        total = d2.sum()
        if total > 0:
            pick = int(np.searchsorted(np.cumsum(d2), rng.random() * total, side="right"))
            pick = min(pick, len(xs) - 1)
        else:  # every row sits on a centre already: any unused row will do
            pick = int(np.setdiff1d(np.arange(len(xs)), chosen)[0])
        chosen.append(pick)
        np.minimum(d2, _sq_dist_to(xs, xs[pick]), out=d2)
    return xs[chosen].astype(np.float64)


def _sq_dist_to(rows: np.ndarray, point: np.ndarray, block: int = 4096) -> np.ndarray:
    # Direct float64 sums: numpy reductions are single-threaded, so the draw is reproducible.
    p = point.astype(np.float64)
    out = np.empty(len(rows))
    for i in range(0, len(rows), block):
        diff = rows[i : i + block].astype(np.float64) - p
        out[i : i + block] = (diff * diff).sum(axis=1)
    return out


def _update_centroids(xs: np.ndarray, labels: np.ndarray, old: np.ndarray) -> np.ndarray:
    clusters = len(old)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=clusters)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    centroids = old.copy()
    for c in np.flatnonzero(counts):
        members = order[starts[c] : starts[c] + counts[c]]
        # numpy adds the rows in ascending order, one thread: no BLAS in the sums.
        centroids[c] = xs[members].sum(axis=0, dtype=np.float64) / counts[c]
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        # Distances to the old centres: exact float64 sums, one per sampled row.
        dist = np.empty(len(xs))
        for i in range(0, len(xs), 256):
            diff = xs[i : i + 256].astype(np.float64) - old[labels[i : i + 256]]
            dist[i : i + 256] = (diff * diff).sum(axis=1)
        far = np.lexsort((np.arange(len(dist)), -dist))[: len(empty)]
        centroids[empty] = xs[far].astype(np.float64)
    return centroids


def keep_per_cluster(
    labels: np.ndarray, distance: np.ndarray, clusters: int, per_cluster: int, *, fill: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """RepMix's keep rule on given labels and distances: (kept rows ascending, filled mask)."""
    n = len(distance)
    all_rows = np.arange(n, dtype=np.int64)
    order = np.argsort(labels, kind="stable")  # rows of each cluster, ascending
    bounds = np.searchsorted(labels[order], np.arange(clusters + 1))
    kept = np.concatenate(
        [np.empty(0, dtype=np.int64)]
        + [_smallest(distance, order[bounds[c] : bounds[c + 1]], per_cluster) for c in range(clusters)]
    )
    filled = np.zeros(n, dtype=bool)
    target = clusters * per_cluster
    if fill and len(kept) < target:
        leftovers = np.setdiff1d(all_rows, kept, assume_unique=True)
        extra = _smallest(distance, leftovers, target - len(kept))
        filled[extra] = True
        kept = np.concatenate([kept, extra])
    return np.sort(kept), filled


def select_repmix(
    features: np.ndarray,
    reference: np.ndarray,
    *,
    clusters: int,
    per_cluster: int,
    seed: int,
    init: Literal["k-means++", "random"] = "random",
    fill: bool = True,
    device: str | None = None,
) -> Selection:
    """RepMix rule: per K-means cluster, the ``per_cluster`` images nearest to a real one.

    With ``fill`` the kept set always has exactly clusters * per_cluster rows:
    clusters smaller than per_cluster are topped up with the globally nearest
    leftovers (flagged in ``Selection.filled``). ``device``: see
    ``nearest_distances`` (None uses CUDA when present); the result is the same.
    """
    x, ref = _check_pair("features", features, "reference", reference)
    clusters = _check_count("clusters", clusters)
    per_cluster = _check_count("per_cluster", per_cluster)
    _check_kmeans(seed, init, clusters, len(x))
    n = len(x)
    target = clusters * per_cluster
    if fill and n < target:
        raise ValueError(
            f"fill needs clusters*per_cluster={target} images but features has only {n} rows"
        )

    labels = kmeans(x, clusters, seed=int(seed), init=init, device=device).labels
    near = nearest_distances(x, ref, device=device)
    kept, filled = keep_per_cluster(labels, near.distance, clusters, per_cluster, fill=fill)
    return Selection(
        method="repmix",
        kept=kept,
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
