import pytest

from benchmark.splits import assign_shards, assign_splits


def test_split_counts_are_exact_and_disjoint():
    keys = [f"k{i}" for i in range(100)]
    out = assign_splits(keys, {"train": 80, "val": 10, "test": 10}, seed=0)
    assert sorted(out) == sorted(keys)
    assert [list(out.values()).count(s) for s in ("train", "val", "test")] == [80, 10, 10]


def test_split_does_not_depend_on_arrival_order_but_on_seed():
    keys = [f"k{i}" for i in range(50)]
    counts = {"train": 30, "val": 10, "test": 10}
    assert assign_splits(keys, counts, 0) == assign_splits(list(reversed(keys)), counts, 0)
    assert assign_splits(keys, counts, 0) != assign_splits(keys, counts, 1)


def test_split_refuses_wrong_counts_and_duplicates():
    with pytest.raises(ValueError, match="3 keys for 4"):
        assign_splits(["a", "b", "c"], {"train": 2, "val": 1, "test": 1}, 0)
    with pytest.raises(ValueError, match="duplicate"):
        assign_splits(["a", "a"], {"train": 2, "val": 0, "test": 0}, 0)


def test_shards_fill_to_a_fixed_count_in_hash_order():
    keys = [f"k{i}" for i in range(25)]
    places = assign_shards(keys, seed=0, max_samples=10)
    sizes = [sum(1 for p in places.values() if p.shard == s) for s in range(3)]
    assert sizes == [10, 10, 5]
    assert sorted((p.shard, p.position) for p in places.values()) == [(i // 10, i % 10) for i in range(25)]
    assert places == assign_shards(list(reversed(keys)), seed=0, max_samples=10)
