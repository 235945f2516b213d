import hashlib

import numpy as np
from pathlib import Path

import pytest

from benchmark.keys import derive_seed, real_key, synthetic_key
from benchmark.real_sets import RealFile, RealSetError, list_real_files, partition_pools, spare_count
from tests.conftest import write_photos


def test_keys_say_where_a_sample_came_from():
    assert synthetic_key("sngan", "celeba", 4213) == "sngan-celeba-s00004213"
    assert real_key("bedroom", "sub/0a1b.c2.jpg") == "real-bedroom-sub_0a1b_c2"
    assert "." not in real_key("x", "a.b.c.png")


def test_derived_seeds_are_stable_and_purpose_specific():
    assert derive_seed(0, "split", "k") == derive_seed(0, "split", "k")
    assert derive_seed(0, "split", "k") != derive_seed(1, "split", "k")
    assert derive_seed(0, "split", "k") != derive_seed(0, "shard", "k")
    # Pinned: a change here would silently change every build made with the same config.
    assert derive_seed(3, "pool", "real-x-1") == 6707380396399281996


def test_listing_is_sorted_recursive_and_filtered(tmp_path):
    write_photos(tmp_path / "b", 2, 0)
    write_photos(tmp_path / "a", 2, 1)
    (tmp_path / "notes.txt").write_text("x")
    files = list_real_files("s", tmp_path, ("jpg",)).files
    assert [f.key for f in files] == ["real-s-a_00000", "real-s-a_00001", "real-s-b_00000", "real-s-b_00001"]


def test_colliding_keys_are_an_error(tmp_path):
    write_photos(tmp_path, 1, 0)
    (tmp_path / "00000.png").write_bytes((tmp_path / "00000.jpg").read_bytes() + b"other bytes")
    with pytest.raises(RealSetError, match="both map to key real-s-00000"):
        list_real_files("s", tmp_path, ("jpg", "png"))


def test_pools_are_disjoint_sized_and_stable_when_a_photo_is_added(tmp_path):
    write_photos(tmp_path, 120, 0)
    files = list_real_files("s", tmp_path, ("jpg",)).files
    pools = partition_pools("s", files, seed=0, real_class=50, gan_train_max=1000)
    real = {f.key for f in pools.real_class}
    train = {f.key for f in pools.gan_train}
    assert len(real) == 50 + spare_count(50) and not real & train
    assert len(real) + len(train) == 120
    # The new photo ranks among the Real candidates, so it pushes the last candidate into the
    # training pool; no other photo crosses from one pool to the other.
    write_photos(tmp_path / "new", 1, 9)
    more = partition_pools("s", list_real_files("s", tmp_path, ("jpg",)).files, seed=0, real_class=50,
                           gan_train_max=1000)
    more_real = {f.key for f in more.real_class}
    more_train = {f.key for f in more.gan_train}
    assert "real-s-new_00000" in more_real
    assert real & more_train == {pools.real_class[-1].key}
    assert not train & more_real
    assert more_real | more_train == real | train | {"real-s-new_00000"}


def test_pools_cap_training_photos_and_refuse_small_folders(tmp_path):
    write_photos(tmp_path, 30, 0)
    files = list_real_files("s", tmp_path, ("jpg",)).files
    assert len(partition_pools("s", files, seed=0, real_class=10, gan_train_max=5).gan_train) == 5
    with pytest.raises(RealSetError, match="semantics.s.path"):
        partition_pools("s", files, seed=0, real_class=30, gan_train_max=5)


def _files(keys):
    return [RealFile(key=k, path=f"/photos/{k}.jpg") for k in keys]


def _hash_order(seed, keys):
    """The pools' order recomputed from its definition: sha256 of (seed, purpose, key)."""
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x1fpool/s\x1f{k}".encode()).hexdigest())


def _pools(files, seed=0, gan_train_max=100):
    # Real class of 5: 5 + ceil(5 * 0.02) + 8 spares = 14 candidates.
    return partition_pools("s", files, seed=seed, real_class=5, gan_train_max=gan_train_max)


KEYS = [f"real-s-{i:05d}" for i in range(30)]


@pytest.mark.parametrize("seed", [0, 7])
def test_pools_follow_the_keyed_hash_rank_whatever_the_file_order(seed):
    pools = _pools(_files(KEYS), seed)
    want = _hash_order(seed, KEYS)
    assert [f.key for f in pools.real_class] == want[:14] and pools.real_class_count == 5
    assert [f.key for f in pools.gan_train] == want[14:]
    shuffled = [KEYS[i] for i in np.random.default_rng(seed).permutation(len(KEYS))]
    for order in (KEYS[::-1], shuffled):
        assert _pools(_files(order), seed) == pools


def test_pool_membership_changes_with_the_seed():
    first, second = _pools(_files(KEYS), 0), _pools(_files(KEYS), 1)
    assert {f.key for f in first.real_class} != {f.key for f in second.real_class}


def _pool_of(pools):
    return {**{f.key: "real" for f in pools.real_class}, **{f.key: "train" for f in pools.gan_train}}


@pytest.mark.parametrize("lands_in", ["real", "train"])
def test_adding_a_photo_moves_only_the_photos_at_the_pool_boundaries(lands_in):
    before = _pools(_files(KEYS), gan_train_max=10)  # 14 candidates, 10 training photos, 6 unused
    # A new photo ranked among the Real candidates, or among the training photos.
    window = {"real": range(14), "train": range(14, 24)}[lands_in]
    new = next(k for k in (f"real-s-new{j}" for j in range(100))
               if _hash_order(0, [*KEYS, k]).index(k) in window)
    after = _pools(_files([*KEYS, new]), gan_train_max=10)
    assert _pool_of(after)[new] == lands_in
    was, now = _pool_of(before), _pool_of(after)
    moved = {k for k in KEYS if was.get(k) != now.get(k)}
    last_real, last_train = before.real_class[-1].key, before.gan_train[-1].key
    # The last Real candidate drops into training; the last training photo falls past the cap.
    assert moved == ({last_real, last_train} if lands_in == "real" else {last_train})
    assert now.get(last_train) is None


def test_symlink_loops_broken_links_and_duplicates_are_refused_with_reasons(tmp_path):
    import os

    write_photos(tmp_path / "a", 3, 0)
    (tmp_path / "a" / "copy.jpg").write_bytes((tmp_path / "a" / "00001.jpg").read_bytes())
    os.symlink(tmp_path / "a" / "self.jpg", tmp_path / "a" / "self.jpg")  # a loop
    os.symlink(tmp_path / "nowhere.jpg", tmp_path / "a" / "dangling.jpg")
    os.symlink(tmp_path / "a", tmp_path / "a" / "folder_loop")  # a folder link: not descended
    os.symlink(tmp_path / "a" / "00002.jpg", tmp_path / "a" / "zlink.jpg")  # a link to a photo
    listing = list_real_files("s", tmp_path, ("jpg",))
    assert [f.key for f in listing.files] == ["real-s-a_00000", "real-s-a_00001", "real-s-a_00002"]
    reasons = {Path(r["path"]).name: r["reason"] for r in listing.rejections}
    assert reasons["self.jpg"] == "symlink loop"
    assert reasons["dangling.jpg"].startswith("broken symlink to")
    # the kept copy is the first path in sort order; a link to a listed photo is a duplicate too
    assert reasons["copy.jpg"] == "duplicate: the same bytes as a/00001.jpg"
    assert reasons["zlink.jpg"] == "duplicate: the same bytes as a/00002.jpg"
    assert {r["stage"] for r in listing.rejections} == {"list_real"}
    assert all(r["key"].startswith("real-s-a_") and r["semantic"] == "s" for r in listing.rejections)


def test_a_folder_without_photos_names_the_key(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RealSetError, match=r"semantics.s.path .*no photos with an extension in real.extensions \['jpg'\]"):
        list_real_files("s", tmp_path, ("jpg",))


def test_same_size_different_bytes_are_both_kept(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x" * 100)
    (tmp_path / "b.jpg").write_bytes(b"y" * 100)
    assert len(list_real_files("s", tmp_path, ("jpg",)).files) == 2
