import hashlib
import dataclasses

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from benchmark.selection import (
    _nearest_float32,
    _nearest_float64,
    KMeansResult,
    NearestResult,
    Selection,
    kmeans,
    nearest_distances,
    select_repmix,
    select_yu,
)

CENTRES = np.array([[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])


def blobs(sizes, radii_by_blob):
    """Points on tight shells around CENTRES; the real images sit at the centres,
    so each point's distance to the reference is exactly its shell radius."""
    rng = np.random.default_rng(7)
    points = []
    for centre, size, radii in zip(CENTRES, sizes, radii_by_blob):
        directions = rng.normal(size=(size, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        points.append(centre + directions * np.asarray(radii)[:, None])
    return np.concatenate(points)


def check_blob_clusters(sel, sizes):
    # The known answers below assume K-means recovered the blobs.
    starts = np.cumsum([0, *sizes])
    groups = [set(sel.cluster[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    assert all(len(g) == 1 for g in groups)
    assert len(set.union(*groups)) == len(sizes)


# ---------------------------------------------------------------- nearest


@pytest.mark.parametrize("dim", [1, 5, 64])
def test_nearest_matches_cdist(dim):
    rng = np.random.default_rng(dim)
    q = rng.normal(size=(200, dim))
    r = rng.normal(size=(150, dim))
    brute = cdist(q, r)
    res = nearest_distances(q, r, chunk=37)
    assert isinstance(res, NearestResult)
    assert res.distance.dtype == np.float64 and res.index.dtype == np.int64
    np.testing.assert_array_equal(res.index, brute.argmin(axis=1))
    np.testing.assert_allclose(res.distance, brute.min(axis=1), rtol=1e-12, atol=1e-12)
    sq = nearest_distances(q, r, squared=True)
    assert sq.squared and not res.squared
    np.testing.assert_allclose(sq.distance, brute.min(axis=1) ** 2, rtol=1e-12, atol=1e-12)


def test_nearest_does_not_depend_on_chunking():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(123, 33)).astype(np.float32)
    r = rng.normal(size=(77, 33)).astype(np.float32)
    runs = [nearest_distances(q, r, chunk=c) for c in (1, 5, 64, 4096)]
    for other in runs[1:]:
        np.testing.assert_array_equal(other.distance, runs[0].distance)
        np.testing.assert_array_equal(other.index, runs[0].index)


def test_nearest_ties_go_to_lowest_index_and_duplicates_are_exact():
    r = np.array([[5.0, 5.0], [1.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [1e8, 1e8 + 1]])
    q = np.array([[0.0, 0.0], [1.0, 0.0], [1e8, 1e8 + 1]])
    res = nearest_distances(q, r, chunk=2)
    np.testing.assert_array_equal(res.index, [1, 1, 4])
    # The expansion alone would lose the exact zero for the huge-norm duplicate.
    np.testing.assert_array_equal(res.distance, [1.0, 0.0, 0.0])


# ---------------------------------------------------------------- repmix


def test_repmix_keeps_nearest_per_cluster():
    sizes = (6, 6, 6)
    radii = [
        [5.0, 1.0, 4.0, 3.0, 2.0, 6.0],  # blob 0: rows 1, 4 nearest
        [2.5, 3.5, 0.5, 4.5, 1.5, 5.5],  # blob 1: rows 8, 10
        [1.0, 9.0, 8.0, 7.0, 6.0, 1.0],  # blob 2: tie 12/17 -> both kept
    ]
    x = blobs(sizes, radii)
    sel = select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0, init="k-means++")
    check_blob_clusters(sel, sizes)
    np.testing.assert_array_equal(sel.kept, [1, 4, 8, 10, 12, 17])
    assert sel.method == "repmix" and not sel.filled.any()
    np.testing.assert_allclose(sel.distance, np.concatenate(radii), rtol=1e-9)
    np.testing.assert_array_equal(sel.nearest, np.repeat([0, 1, 2], 6))
    counts = np.bincount(sel.cluster[sel.kept], minlength=3)
    np.testing.assert_array_equal(counts, [2, 2, 2])
    assert list(sel.reason[sel.kept]) == ["cluster"] * 6 and sel.reason[0] == ""


def test_repmix_tie_within_cluster_goes_to_lower_index():
    # Axis-aligned offsets make the tied distances exactly equal in float64.
    axes = np.array([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]])
    scales = np.array([[2.0, 2.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0], [3.0, 1.0, 2.0, 1.0]])
    x = np.concatenate([c + axes * s[:, None] for c, s in zip(CENTRES, scales)])
    sel = select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0, init="k-means++")
    check_blob_clusters(sel, (4, 4, 4))
    np.testing.assert_array_equal(sel.distance, scales.ravel())
    np.testing.assert_array_equal(sel.kept, [0, 1, 4, 5, 9, 11])


def test_repmix_fill_tops_up_by_global_distance():
    sizes = (5, 5, 1)
    radii = [[4.0, 1.0, 2.0, 3.0, 9.0], [1.5, 7.0, 0.5, 2.5, 8.0], [6.0]]
    x = blobs(sizes, radii)
    sel = select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0, init="k-means++")
    check_blob_clusters(sel, sizes)
    # Per cluster: {1, 2}, {5, 7}, {10}; the nearest leftover overall is row 8
    # (r=2.5, from blob 1) ahead of row 3 (r=3.0, blob 0).
    np.testing.assert_array_equal(sel.kept, [1, 2, 5, 7, 8, 10])
    np.testing.assert_array_equal(np.flatnonzero(sel.filled), [8])
    assert sel.reason[8] == "fill"

    unfilled = select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0, init="k-means++", fill=False)
    np.testing.assert_array_equal(unfilled.kept, [1, 2, 5, 7, 10])
    assert not unfilled.filled.any()


def test_repmix_fill_needs_enough_images():
    x = blobs((2, 2, 1), [[1.0, 2.0], [1.0, 2.0], [1.0]])
    with pytest.raises(ValueError, match="fill"):
        select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0)
    sel = select_repmix(x, CENTRES, clusters=3, per_cluster=2, seed=0, init="k-means++", fill=False)
    assert len(sel.kept) == 5


def test_repmix_per_cluster_counts_on_random_data():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, 16))
    ref = rng.normal(size=(50, 16))
    sel = select_repmix(x, ref, clusters=8, per_cluster=5, seed=4)
    assert len(sel.kept) == 40 and np.all(np.diff(sel.kept) > 0)
    assert sel.kept.dtype == np.int64 and sel.cluster.dtype == np.int64
    assert sel.distance.dtype == np.float64 and sel.filled.dtype == bool
    for c in range(8):
        members = np.flatnonzero(sel.cluster == c)
        kept_here = np.intersect1d(members, sel.kept)
        assert len(kept_here) == min(5, len(members))
        # Every kept member is at least as near as every dropped one.
        dropped = np.setdiff1d(members, kept_here)
        if len(dropped):
            assert sel.distance[kept_here].max() <= sel.distance[dropped].min()
    np.testing.assert_allclose(sel.distance, cdist(x, ref).min(axis=1), rtol=1e-12)


def test_repmix_is_deterministic_and_thread_independent():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 32)).astype(np.float32)
    ref = rng.normal(size=(80, 32)).astype(np.float32)
    np_state = np.random.get_state()[1].copy()
    results = []
    for limit in (1, 2):
        with threadpool_limits(limit):
            results.append(select_repmix(x, ref, clusters=6, per_cluster=7, seed=9))
    results.append(select_repmix(x.copy(), ref.copy(), clusters=6, per_cluster=7, seed=9))
    for other in results[1:]:
        for field in ("kept", "cluster", "distance", "nearest", "filled"):
            np.testing.assert_array_equal(getattr(other, field), getattr(results[0], field))
    # No global RNG was consumed.
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    different = select_repmix(x, ref, clusters=6, per_cluster=7, seed=10)
    assert not np.array_equal(different.cluster, results[0].cluster)


def test_kmeans_does_not_depend_on_thread_count():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 64)).astype(np.float32)
    x[:500] += 0.3
    runs = []
    for limit in (1, 2):
        with threadpool_limits(limit):
            runs.append(kmeans(x, 10, seed=3, sample_per_cluster=100))
    assert isinstance(runs[0], KMeansResult)
    np.testing.assert_array_equal(runs[0].labels, runs[1].labels)
    np.testing.assert_array_equal(runs[0].centroids, runs[1].centroids)


def test_selection_is_frozen():
    sel = select_yu(np.eye(3), np.eye(3), keep=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sel.kept = np.array([0])
    with pytest.raises(ValueError):
        sel.kept[0] = 2
    assert isinstance(sel, Selection)


# ---------------------------------------------------------------- yu


def test_yu_keeps_closest_with_ties_to_lower_index():
    ref = np.array([[0.0, 0.0], [10.0, 0.0]])
    emb = np.array(
        [
            [0.0, 3.0],  # 9 (sq) to ref 0
            [10.0, 1.0],  # 1 to ref 1
            [0.0, 2.0],  # 4
            [10.0, 2.0],  # 4 (tie with row 2)
            [5.0, 0.0],  # 25, tie between refs -> nearest 0
            [0.0, 0.5],  # 0.25
        ]
    )
    sel = select_yu(emb, ref, keep=3)
    np.testing.assert_array_equal(sel.kept, [1, 2, 5])
    np.testing.assert_array_equal(sel.distance, [9.0, 1.0, 4.0, 4.0, 25.0, 0.25])
    np.testing.assert_array_equal(sel.nearest, [0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(sel.cluster, np.full(6, -1))
    assert sel.method == "yu" and not sel.filled.any()
    assert list(sel.reason) == ["", "nearest", "nearest", "", "", "nearest"]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda x, r: select_repmix(x[0], r, clusters=2, per_cluster=1, seed=0), "features"),
        (lambda x, r: select_repmix(x.astype(int), r, clusters=2, per_cluster=1, seed=0), "features"),
        (lambda x, r: select_repmix(x, r[:, :3], clusters=2, per_cluster=1, seed=0), "reference"),
        (lambda x, r: select_repmix(x, r, clusters=0, per_cluster=1, seed=0), "clusters"),
        (lambda x, r: select_repmix(x, r, clusters=2, per_cluster=0, seed=0), "per_cluster"),
        (lambda x, r: select_repmix(x, r, clusters=2, per_cluster=1, seed=0, init="bad"), "init"),
        (lambda x, r: select_repmix(x, r, clusters=2, per_cluster=1, seed=None), "seed"),
        (lambda x, r: select_repmix(x, r, clusters=11, per_cluster=1, seed=0, fill=False), "clusters"),
        (lambda x, r: select_yu(x, r, keep=0), "keep"),
        (lambda x, r: select_yu(x, r, keep=11), "keep"),
        (lambda x, r: select_yu(x, np.full_like(r, np.nan), keep=1), "reference"),
        (lambda x, r: select_yu(x[:0], r, keep=1), "embeddings"),
        (lambda x, r: nearest_distances(x, r, chunk=0), "chunk"),
        (lambda x, r: nearest_distances(x, r.astype(np.int64)), "reference"),
    ],
)
def test_bad_inputs_name_the_argument(call, match):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4))
    r = rng.normal(size=(5, 4))
    with pytest.raises(ValueError, match=match):
        call(x, r)


# ---------------------------------------------------------------- exact float32 search


def brute_nearest(q, r):
    """Float64 sum((a - b)^2) over every pair, ties to the lowest index."""
    q64, r64 = q.astype(np.float64), r.astype(np.float64)
    d = np.stack([((q64[i] - r64) ** 2).sum(axis=1) for i in range(len(q64))])
    idx = d.argmin(axis=1)  # argmin returns the first of equal minima
    return d[np.arange(len(q)), idx], idx


def near_duplicates(seed, n=300, m=200, dim=48):
    """References packed far closer together than float32 resolves, far from the origin."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim) * 1e3
    r = base + rng.normal(size=(m, dim)) * 1e-4
    r[50:60] = r[40]  # exact duplicate references
    q = base + rng.normal(size=(n, dim)) * 1e-4
    q[:20] = r[rng.integers(m, size=20)]  # queries sitting on references
    return q, r


@pytest.mark.parametrize("kind", ["random", "near-duplicate"])
def test_float32_search_equals_brute_force_float64(kind):
    if kind == "random":
        rng = np.random.default_rng(1)
        q, r = rng.normal(size=(300, 40)).astype(np.float32), rng.normal(size=(200, 40)).astype(np.float32)
    else:
        q, r = near_duplicates(2)
    dist, idx = brute_nearest(q, r)
    res = nearest_distances(q, r, chunk=64, squared=True, device="cpu")
    np.testing.assert_array_equal(res.index, idx)
    np.testing.assert_array_equal(res.distance, dist)
    # The wide-feature float64 path agrees to the bit.
    wide = _nearest_float64(q, r, 64)
    np.testing.assert_array_equal(wide[0], dist)
    np.testing.assert_array_equal(wide[1], idx)


def test_near_duplicates_need_the_re_scoring():
    # Sanity of the test data: float32 alone cannot rank these references.
    q, r = near_duplicates(3)
    q32, r32 = q.astype(np.float32), r.astype(np.float32)
    approx = ((q32[:, None, :] - r32[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert (approx != brute_nearest(q, r)[1]).mean() > 0.3
    np.testing.assert_array_equal(nearest_distances(q, r, device="cpu").index, brute_nearest(q, r)[1])


@pytest.mark.parametrize("kind", ["random", "near-duplicate"])
def test_torch_candidate_path_matches_numpy(kind):
    # The CUDA code path, run by torch on the CPU: same candidates rule, same answer.
    if kind == "random":
        rng = np.random.default_rng(4)
        q, r = rng.normal(size=(150, 24)).astype(np.float32), rng.normal(size=(90, 24)).astype(np.float32)
    else:
        q, r = near_duplicates(5, n=150, m=90, dim=24)
    on_numpy = _nearest_float32(q, r, 32, None)
    on_torch = _nearest_float32(q, r, 32, "cpu")
    for a, b in zip(on_numpy, on_torch):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(on_torch[1], brute_nearest(q, r)[1])


def test_nearest_does_not_depend_on_thread_count():
    q, r = near_duplicates(6, n=400, m=300, dim=64)
    runs = []
    for limit in (1, 2):
        with threadpool_limits(limit):
            runs.append(nearest_distances(q, r, chunk=128, device="cpu"))
    np.testing.assert_array_equal(runs[0].distance, runs[1].distance)
    np.testing.assert_array_equal(runs[0].index, runs[1].index)


def test_float16_and_float32_inputs_of_the_same_values_agree():
    rng = np.random.default_rng(8)
    q16 = rng.normal(size=(120, 32)).astype(np.float16)
    r16 = rng.normal(size=(60, 32)).astype(np.float16)
    half = nearest_distances(q16, r16, device="cpu")
    single = nearest_distances(q16.astype(np.float32), r16.astype(np.float32), device="cpu")
    np.testing.assert_array_equal(half.distance, single.distance)
    np.testing.assert_array_equal(half.index, brute_nearest(q16, r16)[1])
    s16 = select_repmix(q16, r16, clusters=4, per_cluster=5, seed=1, device="cpu")
    s32 = select_repmix(q16.astype(np.float32), r16.astype(np.float32), clusters=4, per_cluster=5, seed=1,
                        device="cpu")
    np.testing.assert_array_equal(s16.kept, s32.kept)
    np.testing.assert_array_equal(s16.cluster, s32.cluster)


def test_values_too_large_for_float32_fall_back_to_float64():
    rng = np.random.default_rng(9)
    q = rng.normal(size=(30, 8)) * 1e30
    r = rng.normal(size=(20, 8)) * 1e30
    res = nearest_distances(q, r, squared=True, device="cpu")
    dist, idx = brute_nearest(q, r)
    np.testing.assert_array_equal(res.index, idx)
    np.testing.assert_array_equal(res.distance, dist)


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device"):
        nearest_distances(np.eye(2), np.eye(2), device=0)


# ---------------------------------------------------------------- k-means


def test_kmeans_fits_a_seeded_subsample_and_assigns_every_row():
    rng = np.random.default_rng(12)
    centres = rng.normal(size=(5, 16)) * 10
    truth = rng.integers(5, size=3000)
    x = (centres[truth] + rng.normal(size=(3000, 16))).astype(np.float32)
    res = kmeans(x, 5, seed=2, sample_per_cluster=40, iterations=50)
    assert len(res.sample) == 200 and np.all(np.diff(res.sample) > 0)
    again = kmeans(x, 5, seed=2, sample_per_cluster=40, iterations=50)
    np.testing.assert_array_equal(again.sample, res.sample)
    np.testing.assert_array_equal(again.centroids, res.centroids)
    assert not np.array_equal(kmeans(x, 5, seed=3, sample_per_cluster=40).sample, res.sample)
    # Every row, sampled or not, goes to its exact nearest centroid.
    np.testing.assert_array_equal(res.labels, brute_nearest(x, res.centroids)[1])
    # Converged: each centroid is the float64 mean of its sampled members.
    assert res.iterations < 50
    sample_labels = res.labels[res.sample]
    for c in range(5):
        members = x[res.sample[sample_labels == c]].astype(np.float64)
        np.testing.assert_allclose(res.centroids[c], members.mean(axis=0), rtol=1e-12, atol=1e-12)


def test_kmeans_stops_at_the_iteration_cap():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(500, 8))
    assert kmeans(x, 6, seed=0, iterations=1).iterations == 1
    assert kmeans(x, 6, seed=0, iterations=3).iterations == 3


def test_kmeans_restarts_an_emptied_cluster_at_the_farthest_row():
    # Random init on rows 0 and 1, which are equal: one centre loses every row on
    # the first assignment (ties go to the lower centre) and must restart.
    x = np.array([[0.0, 0.0]] * 6 + [[10.0, 0.0], [10.0, 1.0]])
    for seed in range(200):
        init = np.sort(np.random.default_rng(seed).choice(8, 2, replace=False))
        if init[0] < 6 and init[1] < 6:
            break
    res = kmeans(x, 2, seed=seed, iterations=10)
    np.testing.assert_array_equal(res.labels, [0] * 6 + [1, 1])
    np.testing.assert_array_equal(res.centroids, [[0.0, 0.0], [10.0, 0.5]])


def test_kmeans_plus_plus_is_seeded_and_spreads_the_centres():
    rng = np.random.default_rng(14)
    centres = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    x = centres[np.repeat(np.arange(4), 50)] + rng.normal(size=(200, 2))
    for seed in range(3):
        res = kmeans(x, 4, seed=seed, init="k-means++", iterations=1)
        # One seeding step from well-separated blobs lands one centre in each.
        assert len(set(res.labels)) == 4
        np.testing.assert_array_equal(kmeans(x, 4, seed=seed, init="k-means++").labels,
                                      kmeans(x, 4, seed=seed, init="k-means++").labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clusters": 0}, "clusters"),
        ({"clusters": 11}, "clusters"),
        ({"iterations": 0}, "iterations"),
        ({"sample_per_cluster": 0}, "sample_per_cluster"),
        ({"seed": 1.5}, "seed"),
        ({"init": "bad"}, "init"),
    ],
)
def test_kmeans_bad_arguments_name_themselves(kwargs, match):
    args = {"clusters": 2, "seed": 0} | kwargs
    with pytest.raises(ValueError, match=match):
        kmeans(np.eye(10), args.pop("clusters"), **args)


def test_repmix_selection_is_pinned():
    # Pinned: a change here changes which samples a build keeps, so it must bump
    # benchmark/protocol.py PROTOCOL_VERSION (1.2.0: K-means fitted on a 256-per-centroid
    # sample, then every row assigned).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 8)).astype(np.float32)
    ref = rng.normal(size=(50, 8)).astype(np.float32)
    res = kmeans(x, 2, seed=0)
    assert len(res.sample) == 512 and res.iterations == 12
    np.testing.assert_array_equal(np.bincount(res.labels), [371, 329])
    assert hashlib.sha256(res.labels.tobytes()).hexdigest()[:16] == "8130ad025a91e74e"
    sel = select_repmix(x, ref, clusters=2, per_cluster=3, seed=0)
    assert sel.kept.tolist() == [109, 294, 297, 405, 506, 511]


def test_a_query_strip_too_large_for_float32_restarts_in_float64():
    # Only the last query row is huge: the fallback starts again rather than mixing paths.
    rng = np.random.default_rng(10)
    q = rng.normal(size=(50, 8))
    q[-1] *= 1e30
    r = rng.normal(size=(20, 8))
    res = nearest_distances(q, r, chunk=7, squared=True, device="cpu")
    dist, idx = brute_nearest(q, r)
    np.testing.assert_array_equal(res.index, idx)
    np.testing.assert_array_equal(res.distance, dist)
