"""RepMix selection at protocol size: our exact K-means + nearest-real search against faiss.

    python benchmarks/selection_scale.py [--sizes 20000 50000 100000] [--refs 12000]
        [--dim 2048] [--clusters 100] [--per-cluster 120] [--dtype float32|float16] [--quick]

Synthetic clustered features stand in for Inception rows: --clusters Gaussian blobs in --dim
dimensions, candidates and --refs reference rows drawn around the same centres (seeded). For
each size, in fresh processes so that each peak RSS is its own (shown above what the imports and the data hold): ours (`benchmark.selection`:
`kmeans`, then `nearest_distances` to the references) and faiss-cpu (`faiss.Kmeans` with the
same k, 25 iterations and its default 256-per-centroid training sample, every row assigned,
then an exact `IndexFlatL2` search). The table gives both times per part, their ratio, peak
RSS, the largest difference between our nearest distances and faiss's, the share of rows with
the same nearest reference, and the overlap of the kept sets (the same keep rule on each
side's labels; the clusterings differ, so the overlap is below 1). faiss is optional: without
it the faiss columns are skipped with a message. The machine may be shared: compare ratios
within one run, not times across runs.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402

SEED = 0


def make_data(n: int, refs: int, dim: int, clusters: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Blobs: unit-variance centres, rows = centre + 0.5 * noise; same centres for both sets."""
    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(count: int, stream: int) -> np.ndarray:
        g = np.random.default_rng([SEED, stream])
        out = np.empty((count, dim), dtype=dtype)
        for i in range(0, count, 8192):  # bounded float32 temporaries
            m = min(8192, count - i)
            rows = centres[g.integers(clusters, size=m)] + 0.5 * g.standard_normal((m, dim), dtype=np.float32)
            out[i : i + m] = rows
        return out

    return draw(n, 1), draw(refs, 2)


def run_ours(args, n: int, out: str) -> None:
    import torch  # noqa: F401  imported before timing, as in a pipeline worker

    from benchmark.selection import keep_per_cluster, kmeans, nearest_distances

    x, ref = make_data(n, args.refs, args.dim, args.clusters, args.dtype)
    base = _rss()
    t0 = time.perf_counter()
    labels = kmeans(x, args.clusters, seed=SEED).labels
    t1 = time.perf_counter()
    near = nearest_distances(x, ref)
    t2 = time.perf_counter()
    kept, _ = keep_per_cluster(labels, near.distance, args.clusters, args.per_cluster)
    _save(out, base, t1 - t0, t2 - t1, labels, near.distance, near.index, kept)


def run_faiss(args, n: int, out: str) -> None:
    import faiss

    from benchmark.selection import keep_per_cluster

    x, ref = make_data(n, args.refs, args.dim, args.clusters, args.dtype)
    base = _rss()
    t0 = time.perf_counter()
    x32 = np.ascontiguousarray(x, dtype=np.float32)  # faiss takes float32 only: the cast counts
    km = faiss.Kmeans(args.dim, args.clusters, niter=25, seed=SEED)
    km.train(x32)
    labels = km.index.search(x32, 1)[1][:, 0].astype(np.int64)
    t1 = time.perf_counter()
    index = faiss.IndexFlatL2(args.dim)
    index.add(np.ascontiguousarray(ref, dtype=np.float32))
    d2, idx = index.search(x32, 1)
    t2 = time.perf_counter()
    dist = np.sqrt(np.maximum(d2[:, 0].astype(np.float64), 0))
    kept, _ = keep_per_cluster(labels, dist, args.clusters, args.per_cluster)
    _save(out, base, t1 - t0, t2 - t1, labels, dist, idx[:, 0].astype(np.int64), kept)


def _rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # peak so far, MiB


def _save(out, base, t_km, t_nn, labels, dist, index, kept) -> None:
    # work: the peak above what imports and the data already held.
    np.savez(out, t_km=t_km, t_nn=t_nn, rss=_rss() - base, labels=labels, dist=dist, index=index, kept=kept)


def _fastest(runs: list[dict]) -> dict:
    best = dict(runs[0])
    for key in ("t_km", "t_nn"):
        best[key] = min(r[key] for r in runs)
    return best


def _measure_once(target, args, n: int, folder: str) -> dict:
    path = str(Path(folder) / f"{target.__name__}-{n}.npz")
    proc = mp.get_context("spawn").Process(target=target, args=(args, n, path))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__} at {n} rows failed (exit {proc.exitcode})")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[20_000, 50_000, 100_000])
    parser.add_argument("--refs", type=int, default=12_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument("--per-cluster", type=int, default=120, help="kept per cluster (12k of 100k)")
    parser.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per side, alternating ours/faiss; the fastest of each is shown")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3000 rows, 500 refs, dim 256")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.refs, args.dim, args.clusters, args.per_cluster = [3000], 500, 256, 10, 30
    try:
        import faiss

        have_faiss = f"faiss {faiss.__version__}"
    except ImportError:
        have_faiss = None
        print("faiss is not installed (pip install faiss-cpu): the faiss columns are skipped")
    print(f"{args.clusters} blobs in {args.dim}-d, {args.refs} references, {args.dtype} features, "
          f"{have_faiss or 'no faiss'}; times in s, RSS in MiB")
    head = (f"{'rows':>7} {'km ours':>8} {'km faiss':>8} {'nn ours':>8} {'nn faiss':>8} "
            f"{'total x':>7} {'+RSS our':>8} {'+RSS fai':>8} {'max|dd|':>8} {'same nn':>7} {'kept ov':>7}")
    print(head)
    with tempfile.TemporaryDirectory() as folder:
        for n in args.sizes:
            ours, theirs = [], []
            for _ in range(args.repeat):  # alternate, so load from elsewhere hits both sides
                ours.append(_measure_once(run_ours, args, n, folder))
                if have_faiss is not None:
                    theirs.append(_measure_once(run_faiss, args, n, folder))
            ours = _fastest(ours)
            if have_faiss is None:
                print(f"{n:>7} {ours['t_km']:8.2f} {'-':>8} {ours['t_nn']:8.2f} {'-':>8} {'-':>7} "
                      f"{ours['rss']:8.0f} {'-':>8} {'-':>8} {'-':>7} {'-':>7}", flush=True)
                continue
            theirs = _fastest(theirs)
            ratio = (theirs["t_km"] + theirs["t_nn"]) / (ours["t_km"] + ours["t_nn"])
            dd = float(np.abs(ours["dist"] - theirs["dist"]).max())
            same = float((ours["index"] == theirs["index"]).mean())
            overlap = len(np.intersect1d(ours["kept"], theirs["kept"])) / len(ours["kept"])
            print(f"{n:>7} {ours['t_km']:8.2f} {theirs['t_km']:8.2f} {ours['t_nn']:8.2f} {theirs['t_nn']:8.2f} "
                  f"{ratio:7.2f} {ours['rss']:8.0f} {theirs['rss']:8.0f} {dd:8.1e} {same:7.4f} "
                  f"{overlap:7.3f}", flush=True)
    print("total x = faiss time / our time (K-means + search); > 1: ours is faster. "
          "+RSS: peak MiB above the imports and the data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
