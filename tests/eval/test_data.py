"""eval.data: shards -> batches. A tiny benchmark folder built inline (WebDataset tars written by
benchmark.shards, a manifest by benchmark.manifest, classes.json), 36 px images."""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import online_corruption
from benchmark.corruption_policy import CLEAN
from benchmark.corruptions import names as corruption_names
from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from benchmark.shards import ShardSample, write_shard
from eval import data
from eval.benchmark_folder import BenchmarkFolder, open_benchmark
from eval.data import DataSettings, eval_loader, examples_per_rank, train_count, train_loader

CLASSES = ("real", "sngan", "progan")
SEMANTICS = (("celeba", True), ("bedroom", True), ("cat", False))  # label order: seen first
SIDE = 36
UNSEEN_SET = "repmix"


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _image(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, size=(SIDE, SIDE, 3), dtype=np.uint8)


def build_folder(root: Path, per_cell: dict[str, int], shards: dict[str, int],
                 corruption_settings: dict | None = None) -> BenchmarkFolder:
    """per_cell[split] images per (class, semantic); the split's samples dealt over shards[split]
    tars in key order. Val/test rows say they carry a corruption (the stored bytes are what they
    are)."""
    root.mkdir(parents=True, exist_ok=True)
    rows, n = [], 0
    for split, count in per_cell.items():
        samples = []
        for label, source in enumerate(CLASSES):
            for sem_label, (semantic, seen) in enumerate(SEMANTICS):
                for j in range(count):
                    key = f"{source}-{semantic}-{split}-s{j:04d}"
                    corrupted = split != "train"
                    row = {c: None for c in MANIFEST_SCHEMA.names}
                    row.update(key=key, split=split, source=source, label=label, semantic=semantic,
                               semantic_label=sem_label, seen=seen, generator=source,
                               checkpoint_sha256="", sample_index=j, latent_seed=n, origin="",
                               cluster=-1, filled=False, corruption="fog" if corrupted else "none",
                               severity=3 if corrupted else 0, corruption_seen=True,
                               corruption_seed=0, sha256="", png_bytes=0)
                    samples.append((row, _image(n)))
                    n += 1
        samples.sort(key=lambda s: s[0]["key"])
        for s in range(shards[split]):
            name = f"{split}-{s:06d}.tar"
            members = samples[s::shards[split]]
            for pos, (row, _) in enumerate(members):
                row.update(shard=name, position=pos)
            write_shard(root / name,
                        [ShardSample(r["key"], _png(img), dict(r)) for r, img in members])
            rows += [r for r, _ in members]
    write_manifest(rows, root / "manifest.parquet")
    semantics = [{"name": n, "label": i, "seen": seen} for i, (n, seen) in enumerate(SEMANTICS)]
    (root / "classes.json").write_text(json.dumps({"classes": list(CLASSES),
                                                   "semantics": semantics}))
    corruptions = {"unseen_set": UNSEEN_SET, "apply_at": "stored", **(corruption_settings or {})}
    info = {"resolution": SIDE, "corruptions": corruptions}
    (root / "dataset_info.json").write_text(json.dumps(info))
    return open_benchmark(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> BenchmarkFolder:
    """train: 3 classes x 3 semantics x 4 = 36 (24 seen) over 4 tars; val 9 in 1; test 18 in 2."""
    return build_folder(tmp_path_factory.mktemp("bench"), {"train": 4, "val": 1, "test": 2},
                        {"train": 4, "val": 1, "test": 2})


FAST = DataSettings(resize=40, crop=32, eval_size=32, batch_size=5, workers=0, shuffle_buffer=8,
                    mixes=2, online_corruption=False, seed=7)


def _rows(folder: BenchmarkFolder) -> dict[str, dict]:
    return {r["key"]: r for r in folder.manifest().to_pylist()}


def _stored(folder: BenchmarkFolder, key: str) -> np.ndarray:
    row = _rows(folder)[key]
    return _image(row["latent_seed"])


def _examples(loader) -> list[dict]:
    """Batches -> one dict per example, in order."""
    out = []
    for b in loader:
        for i in range(len(b["key"])):
            out.append({k: b[k][i] for k in b})
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["key"] == y["key"] and all(torch.equal(x[k], y[k]) for k in x if k != "key")
        for x, y in zip(a, b))


# ---------------------------------------------------------------------------------- training


def test_train_batch_shapes_labels_and_weights(folder):
    batches = list(train_loader(folder, FAST, input_kind="resized", epoch=0))
    rows = _rows(folder)
    assert [len(b["key"]) for b in batches] == [5, 5, 5, 5, 4]  # 24 seen train, partial last batch
    for b in batches:
        n = len(b["key"])
        assert b["image"].shape == (n, 2, 3, 32, 32) and b["image"].dtype == torch.float32
        assert b["label"].shape == b["semantic"].shape == b["mix"].shape == (n, 2)
        assert b["label"].dtype == b["semantic"].dtype == torch.long
        assert float(b["image"].min()) >= -1.0 and float(b["image"].max()) <= 1.0
        assert torch.allclose(b["mix"].sum(dim=1), torch.ones(n), atol=1e-6)
        for i, keys in enumerate(b["key"]):
            assert len(keys) == 2
            # labels and semantics from each sample's own JSON
            assert b["label"][i].tolist() == [rows[k]["label"] for k in keys]
            assert b["semantic"][i].tolist() == [rows[k]["semantic_label"] for k in keys]


def test_train_images_are_resize_flip_crop_of_the_stored_image(folder):
    """Without corruption, each image is a 32 px window of the 40 px resize, possibly flipped."""
    s = replace(FAST, mixes=1)
    for ex in _examples(train_loader(folder, s, input_kind="resized", epoch=3)):
        big = data.resize_shorter(_stored(folder, ex["key"][0]), 40)
        aug = data.augment(_stored(folder, ex["key"][0]), input_kind="resized", settings=s,
                           sample_key=ex["key"][0], epoch=3, corruptions=(), apply_at="stored")
        top, left = aug.crop_at
        window = big[:, ::-1] if aug.flipped else big
        assert torch.equal(ex["image"][0], data.normalise(window[top:top + 32, left:left + 32]))


def test_flip_and_crop_vary():
    image = _image(0)
    s = replace(FAST, mixes=1)
    augs = [data.augment(image, input_kind="resized", settings=s, sample_key=f"k{i}", epoch=0,
                         corruptions=(), apply_at="stored") for i in range(40)]
    assert {a.flipped for a in augs} == {True, False}
    assert len({a.crop_at for a in augs}) > 10
    no_flip = [data.augment(image, input_kind="resized", settings=replace(s, flip=False),
                            sample_key=f"k{i}", epoch=0, corruptions=(), apply_at="stored")
               for i in range(40)]
    assert not any(a.flipped for a in no_flip)


def test_single_mix_shapes(folder):
    s = replace(FAST, mixes=1)
    for b in train_loader(folder, s, input_kind="stored", epoch=0):
        n = len(b["key"])
        assert b["image"].shape == (n, 1, 3, SIDE, SIDE)  # stored size, no resize
        assert torch.equal(b["mix"], torch.ones(n, 1))
        assert b["label"].shape == (n, 1)


def test_three_way_mixing_shapes(folder):
    s = replace(FAST, mixes=3)
    for b in train_loader(folder, s, input_kind="resized", epoch=0):
        n = len(b["key"])
        assert b["image"].shape == (n, 3, 3, 32, 32) and b["mix"].shape == (n, 3)
        assert all(len(k) == 3 for k in b["key"])
        assert torch.allclose(b["mix"].sum(dim=1), torch.ones(n), atol=1e-6)


def test_stored_kind_is_stored_image_or_its_flip(folder):
    s = replace(FAST, mixes=1)
    flips = set()
    for ex in _examples(train_loader(folder, s, input_kind="stored", epoch=1)):
        stored = _stored(folder, ex["key"][0])
        if torch.equal(ex["image"][0], data.normalise(stored)):
            flips.add(False)
        else:
            assert torch.equal(ex["image"][0], data.normalise(stored[:, ::-1]))
            flips.add(True)
    assert flips == {True, False}


def test_seen_only_filter(folder):
    rows = _rows(folder)
    seen = [k for k, r in rows.items() if r["split"] == "train" and r["seen"]]
    every = [k for k, r in rows.items() if r["split"] == "train"]
    anchors = [ex["key"][0] for ex in _examples(train_loader(folder, FAST, input_kind="resized",
                                                             epoch=0))]
    assert sorted(anchors) == sorted(seen)  # each seen train sample exactly once per epoch
    partners = [k for ex in _examples(train_loader(folder, FAST, input_kind="resized", epoch=0))
                for k in ex["key"][1:]]
    assert all(rows[k]["seen"] and rows[k]["split"] == "train" for k in partners)
    assert train_count(folder, FAST) == len(seen) == 24
    opened = replace(FAST, seen_only=False)
    anchors = [ex["key"][0] for ex in _examples(train_loader(folder, opened, input_kind="resized",
                                                             epoch=0))]
    assert sorted(anchors) == sorted(every)
    assert train_count(folder, opened) == 36


def test_same_seed_and_epoch_give_the_same_batches(folder):
    s = replace(FAST, online_corruption=True)
    a = _examples(train_loader(folder, s, input_kind="resized", epoch=2))
    b = _examples(train_loader(folder, s, input_kind="resized", epoch=2))
    assert _same(a, b)


def test_epochs_and_seeds_differ(folder):
    a = _examples(train_loader(folder, FAST, input_kind="resized", epoch=0))
    b = _examples(train_loader(folder, FAST, input_kind="resized", epoch=1))
    c = _examples(train_loader(folder, replace(FAST, seed=8), input_kind="resized", epoch=0))
    assert [x["key"][0] for x in a] != [x["key"][0] for x in b]  # order
    assert [x["key"][0] for x in a] != [x["key"][0] for x in c]
    by_key_b = {x["key"][0]: x for x in b}
    # the same anchor gets another crop/flip, another partner, other weights in another epoch
    assert sum(not torch.equal(x["image"][0], by_key_b[x["key"][0]]["image"][0])
               for x in a) > len(a) // 2
    assert sum(x["key"][1] != by_key_b[x["key"][0]]["key"][1] for x in a) > len(a) // 2
    assert all(not torch.equal(x["mix"], by_key_b[x["key"][0]]["mix"]) for x in a)


def test_shard_order_is_shuffled_per_epoch(folder, monkeypatch):
    """The shard list is shuffled per epoch before the worker split (no buffer: the shard order
    shows)."""
    s = replace(FAST, shuffle_buffer=0, mixes=1)
    firsts = set()
    for epoch in range(6):
        keys = [ex["key"][0]
                for ex in _examples(train_loader(folder, s, input_kind="stored", epoch=epoch))]
        shard_of = {k: r["shard"] for k, r in _rows(folder).items()}
        order = list(dict.fromkeys(shard_of[k] for k in keys))
        assert len(order) == 4  # shards read one after another
        firsts.add(tuple(order))
    assert len(firsts) > 1


def test_workers_give_the_same_set_of_examples(folder):
    s = replace(FAST, online_corruption=True, corruption_probability=0.5)
    one = _examples(train_loader(folder, s, input_kind="resized", epoch=4))
    two = _examples(train_loader(folder, replace(s, workers=2), input_kind="resized", epoch=4))
    assert sorted(x["key"][0] for x in one) == sorted(x["key"][0] for x in two)
    by_key = {x["key"][0]: x for x in two}
    for x in one:
        y = by_key[x["key"][0]]
        assert x["key"] == y["key"]
        assert all(torch.equal(x[k], y[k]) for k in ("image", "label", "mix", "semantic"))
    # and the 2-worker order reproduces
    again = _examples(train_loader(folder, replace(s, workers=2), input_kind="resized", epoch=4))
    assert _same(two, again)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory) -> BenchmarkFolder:
    """36 train samples over 5 tars (8, 7, 7, 7, 7; 4 to 6 seen each), val 9 over 2 tars."""
    return build_folder(tmp_path_factory.mktemp("uneven"), {"train": 4, "val": 1},
                        {"train": 5, "val": 2})


@pytest.mark.parametrize("world_size, workers", [(2, 0), (3, 2)])
def test_ranks_get_equal_batches_and_the_single_process_examples(uneven, world_size, workers):
    """Ranks split samples, not shards: the same batch count on every rank however uneven the
    shards; disjoint shares; together the single-process epoch minus at most world_size - 1
    samples per worker stream, each example the same tensors (partners and weights drawn by
    key, not by rank)."""
    s = replace(FAST, workers=workers, batch_size=3)
    one = {x["key"][0]: x for x in _examples(train_loader(uneven, s, input_kind="resized", epoch=3))}
    per_rank = examples_per_rank(uneven, s, 3, world_size)
    batches, shares = [], []
    for r in range(world_size):
        got = list(train_loader(uneven, s, input_kind="resized", epoch=3, rank=r,
                                world_size=world_size))
        batches.append([len(b["key"]) for b in got])
        shares.append(_examples(got))
    assert all(b == batches[0] for b in batches)  # DDP takes the same steps on every rank
    assert all(len(x) == per_rank for x in shares)
    keys = [x["key"][0] for share in shares for x in share]
    assert len(set(keys)) == len(keys)  # disjoint
    dropped = set(one) - set(keys)
    assert set(keys) <= set(one) and len(dropped) == len(one) - world_size * per_rank
    assert len(dropped) <= (world_size - 1) * max(workers, 1)
    for x in (x for share in shares for x in share):
        y = one[x["key"][0]]
        assert x["key"] == y["key"]
        assert all(torch.equal(x[k], y[k]) for k in ("image", "label", "mix", "semantic"))
    with pytest.raises(ValueError, match="rank"):
        train_loader(uneven, FAST, input_kind="resized", epoch=0, rank=2, world_size=2)


def test_rank_batches_together_are_the_single_process_batch(uneven):
    """With 0 workers, rank r's j-th batch of b is every 2nd example of the single process's
    j-th batch of 2b, from the r-th: DDP's mean of the ranks' mean gradients is that batch's."""
    one = list(train_loader(uneven, replace(FAST, batch_size=6), input_kind="stored", epoch=1))
    ranks = [list(train_loader(uneven, replace(FAST, batch_size=3), input_kind="stored", epoch=1,
                               rank=r, world_size=2)) for r in (0, 1)]
    assert len(one) == len(ranks[0]) == len(ranks[1]) == 4  # 24 seen samples
    for j, whole in enumerate(one):
        for r in (0, 1):
            assert ranks[r][j]["key"] == whole["key"][r::2]
            assert torch.equal(ranks[r][j]["image"], whole["image"][r::2])


def test_eval_ranks_split_the_split_without_dropping(uneven):
    one = [x["key"] for x in _examples(eval_loader(uneven, "val", FAST, input_kind="resized"))]
    shares = [[x["key"] for x in _examples(eval_loader(uneven, "val", FAST, input_kind="resized",
                                                       rank=r, world_size=2))] for r in (0, 1)]
    assert len(one) == 6 and [len(x) for x in shares] == [3, 3]
    assert sorted(shares[0] + shares[1]) == sorted(one)
    odd = [[x["key"] for x in _examples(eval_loader(uneven, "val", FAST, input_kind="resized",
                                                    rank=r, world_size=4))] for r in range(4)]
    assert [len(x) for x in odd] == [2, 2, 1, 1] and sorted(sum(odd, [])) == sorted(one)


def test_partners_uniform_over_the_seen_train_set(folder):
    """Partners come from the whole (seen) train set, whatever shard or worker the anchor is in."""
    s = replace(FAST, mixes=3, resize=32, crop=32)
    counts = Counter()
    for epoch in range(12):
        for ex in _examples(train_loader(folder, s, input_kind="stored", epoch=epoch)):
            counts.update(ex["key"][1:])
    seen = {k for k, r in _rows(folder).items() if r["split"] == "train" and r["seen"]}
    assert set(counts) == seen  # 576 draws over 24 keys: every one drawn
    expected = sum(counts.values()) / len(seen)
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 49.7  # chi-square, 23 degrees of freedom, p = 0.001


def test_partner_images_are_the_partners_own(folder):
    """A partner's pixels are an augmentation of the partner's own stored image (read by random
    access)."""
    s = replace(FAST, mixes=2)
    for ex in _examples(train_loader(folder, s, input_kind="stored", epoch=0)):
        partner = ex["key"][1]
        stored = _stored(folder, partner)
        assert any(torch.equal(ex["image"][1], data.normalise(v))
                   for v in (stored, stored[:, ::-1]))


def test_mixing_weights_beta_and_dirichlet():
    s2 = replace(FAST, mixes=2)
    w = np.stack([data.mixing_weights(s2, f"k{i}", 0) for i in range(4000)])
    assert w.shape == (4000, 2) and np.allclose(w.sum(1), 1, atol=1e-6)
    # Beta(0.4, 0.4): mean 1/2, variance ab / ((a+b)^2 (a+b+1)) = 0.1389 (a uniform draw: 0.0833)
    assert abs(w[:, 0].mean() - 0.5) < 0.02 and abs(w[:, 0].var() - 0.16 / (0.64 * 1.8)) < 0.01
    s3 = replace(FAST, mixes=3)
    w3 = np.stack([data.mixing_weights(s3, f"k{i}", 0) for i in range(4000)])
    # Dirichlet(0.4, 0.4, 0.4): each weight mean 1/3, variance a(A-a) / (A^2 (A+1)) = 0.0899
    assert np.allclose(w3.sum(1), 1, atol=1e-6)
    assert np.allclose(w3.mean(0), 1 / 3, atol=0.02)
    assert np.allclose(w3.var(0), 0.4 * 0.8 / (1.2 ** 2 * 2.2), atol=0.01)
    assert np.array_equal(data.mixing_weights(s2, "k", 1), data.mixing_weights(s2, "k", 1))
    assert not np.array_equal(data.mixing_weights(s2, "k", 1), data.mixing_weights(s2, "k", 2))


# ---------------------------------------------------------------------------------- corruption


SEEN = corruption_names("seen", UNSEEN_SET)


def _augment(key: str, probability: float, epoch: int = 0, kind: str = "resized",
             apply_at: str = "stored"):
    s = replace(FAST, online_corruption=True, corruption_probability=probability)
    return data.augment(_image(1), input_kind=kind, settings=s, sample_key=key, epoch=epoch,
                        corruptions=SEEN, apply_at=apply_at)


def test_corruption_probability_is_respected():
    assert all(_augment(f"k{i}", 0.0).corruption.name == CLEAN for i in range(50))
    always = [_augment(f"k{i}", 1.0) for i in range(30)]
    assert all(a.corruption.name in SEEN for a in always)
    assert all(1 <= a.corruption.severity <= 5 for a in always)
    half = [_augment(f"k{i}", 0.5).corruption.name != CLEAN for i in range(200)]
    assert 0.38 < np.mean(half) < 0.62


def test_corruption_changes_pixels_and_is_seeded_per_key_and_epoch():
    a = _augment("k1", 1.0)
    clean = data.augment(_image(1), input_kind="resized", settings=FAST, sample_key="k1", epoch=0,
                         corruptions=SEEN, apply_at="stored")
    assert a.crop_at == clean.crop_at and a.flipped == clean.flipped
    assert not np.array_equal(a.image, clean.image)
    assert np.array_equal(a.image, _augment("k1", 1.0).image)
    choices = [_augment("k1", 1.0, epoch=e).corruption for e in range(8)]
    picks = {(c.name, c.severity) for c in choices}
    assert len(picks) > 1  # another corruption in another epoch


def test_corruption_after_resize_and_crop_with_the_builds_apply_at(folder, tmp_path, monkeypatch):
    """The released Compose corrupts the crop (RandomImagenetC after RandomCrop); apply_at comes
    from the build's corruption settings; only seen corruptions are drawn."""
    seen_calls = []
    real = online_corruption.corrupt_image

    def spy(image, choice, *, apply_at, backend="engine"):
        seen_calls.append((image.shape, choice.name, apply_at))
        return real(image, choice, apply_at=apply_at, backend=backend)

    monkeypatch.setattr(online_corruption, "corrupt_image", spy)
    f = build_folder(tmp_path / "at224", {"train": 1}, {"train": 1}, {"apply_at": "resized_224"})
    s = replace(FAST, online_corruption=True, corruption_probability=1.0, mixes=1)
    batches = list(train_loader(f, s, input_kind="resized", epoch=0))
    assert len(seen_calls) == 6
    assert {c[0] for c in seen_calls} == {(32, 32, 3)}
    assert {c[2] for c in seen_calls} == {"resized_224"}
    assert {c[1] for c in seen_calls} <= set(SEEN)
    assert all(b["image"].shape[-1] == 32 for b in batches)
    seen_calls.clear()
    list(train_loader(folder, s, input_kind="stored", epoch=0))
    assert {c[0] for c in seen_calls} == {(SIDE, SIDE, 3)}
    assert {c[2] for c in seen_calls} == {"stored"}
    seen_calls.clear()
    list(train_loader(folder, replace(s, online_corruption=False), input_kind="stored", epoch=0))
    assert seen_calls == []


# ---------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("split", ["val", "test"])
def test_eval_is_fixed_order_and_never_corrupted_again(folder, split, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("eval images must not be corrupted again")

    monkeypatch.setattr(online_corruption, "corrupt_image", refuse)
    monkeypatch.setattr(online_corruption, "choose_online", refuse)
    s = replace(FAST, online_corruption=True, corruption_probability=1.0, eval_size=48)
    rows = [r for r in folder.manifest().to_pylist() if r["split"] == split and r["seen"]]
    expected = [r["key"] for r in sorted(rows, key=lambda r: (r["shard"], r["position"]))]
    batches = list(eval_loader(folder, split, s, input_kind="resized", seen_only=True))
    keys = [k for b in batches for k in b["key"]]
    assert keys == expected
    by_key = _rows(folder)
    for b in batches:
        n = len(b["key"])
        assert b["image"].shape == (n, 3, 48, 48)
        assert b["label"].shape == b["semantic"].shape == (n,)
        assert b["label"].tolist() == [by_key[k]["label"] for k in b["key"]]
        assert b["semantic"].tolist() == [by_key[k]["semantic_label"] for k in b["key"]]
        for i, k in enumerate(b["key"]):  # exactly the stored image, resized (test.py's 'clean')
            resized = data.resize_shorter(_stored(folder, k), 48)
            assert torch.equal(b["image"][i], data.normalise(resized))
    stored = list(eval_loader(folder, split, s, input_kind="stored", seen_only=True))
    for b in stored:
        for i, k in enumerate(b["key"]):
            assert torch.equal(b["image"][i], data.normalise(_stored(folder, k)))
    again = [k for b in eval_loader(folder, split, replace(s, workers=2), input_kind="resized",
                                    seen_only=True) for k in b["key"]]
    assert sorted(again) == sorted(expected)
    repeat = [k for b in eval_loader(folder, split, replace(s, workers=2), input_kind="resized",
                                     seen_only=True) for k in b["key"]]
    assert repeat == again  # with N workers the order is fixed for that N


def test_eval_seen_only_default_and_override(folder):
    every = [k for b in eval_loader(folder, "test", FAST, input_kind="stored", seen_only=False)
             for k in b["key"]]
    assert len(every) == 18 and {_rows(folder)[k]["seen"] for k in every} == {True, False}
    default = [k for b in eval_loader(folder, "test", FAST, input_kind="stored", seen_only=None)
               for k in b["key"]]
    assert len(default) == 12  # settings.seen_only (True)
    assert data.eval_count(folder, "test", FAST, seen_only=False) == 18


def test_settings_checked():
    with pytest.raises(ValueError, match="crop"):
        DataSettings(resize=32, crop=40)
    with pytest.raises(ValueError, match="corruption_probability"):
        DataSettings(corruption_probability=1.5)
    with pytest.raises(ValueError, match="input_kind"):
        data.eval_image(_image(0), input_kind="cropped", settings=FAST)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory) -> BenchmarkFolder:
    """All 36 train samples in one tar, which also holds two samples whose JSON says val (not in
    the manifest): the stream must drop them by their JSON."""
    f = build_folder(tmp_path_factory.mktemp("one"), {"train": 4}, {"train": 1})
    rows = sorted(_rows(f).values(), key=lambda r: r["position"])
    samples = [ShardSample(r["key"], _png(_image(r["latent_seed"])), r) for r in rows]
    for j in range(2):
        meta = dict(rows[0], key=f"real-celeba-stray-s{j:04d}", split="val", position=len(rows) + j)
        samples.append(ShardSample(meta["key"], _png(_image(1000 + j)), meta))
    write_shard(f.path / "train-000000.tar", samples)
    return f


def test_split_filter_on_the_json(one_shard):
    s = replace(FAST, mixes=1)
    for seen_only in (True, False):
        loader = train_loader(one_shard, replace(s, seen_only=seen_only), input_kind="stored",
                              epoch=0)
        keys = [ex["key"][0] for ex in _examples(loader)]
        assert len(keys) == (24 if seen_only else 36) and not any("stray" in k for k in keys)


def test_buffer_shuffle_is_seeded_per_epoch(one_shard):
    """One shard of train samples: the order comes from the sample buffer alone."""
    s = replace(FAST, mixes=1, shuffle_buffer=36, seen_only=False)
    orders = [tuple(ex["key"][0] for ex in _examples(train_loader(one_shard, s, input_kind="stored",
                                                                   epoch=e)))
              for e in (0, 0, 1)]
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert list(orders[0]) != sorted(orders[0])  # shuffled at all


def test_partner_index_names_a_tar_that_lacks_a_listed_sample(tmp_path):
    f = build_folder(tmp_path / "short", {"train": 1}, {"train": 1})
    dropped, *rows = sorted(_rows(f).values(), key=lambda r: r["position"])
    write_shard(f.path / "train-000000.tar",
                [ShardSample(r["key"], _png(_image(r["latent_seed"])), r) for r in rows])
    with pytest.raises(ValueError, match=rf"train-000000\.tar: no member {dropped['key']}\.png"):
        train_loader(f, FAST, input_kind="resized", epoch=0)
    train_loader(f, replace(FAST, mixes=1), input_kind="resized", epoch=0)  # no partners, no index


def test_without_online_corruption_the_builds_corruption_section_is_not_needed(tmp_path):
    f = build_folder(tmp_path / "noinfo", {"train": 1}, {"train": 1})
    (f.path / "dataset_info.json").unlink()
    f = open_benchmark(f.path)
    assert len(_examples(train_loader(f, FAST, input_kind="resized", epoch=0))) == 6
    with pytest.raises(Exception, match="dataset_info.json"):
        train_loader(f, replace(FAST, online_corruption=True), input_kind="resized", epoch=0)
