"""The public reader: `eval.open_benchmark(...)`'s splits and its torch dataset of the samples,
filtered by seen semantics and by stored corruption."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import eval as public
from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from benchmark.shards import ShardSample, write_shard
from eval.benchmark_folder import BenchmarkError, open_benchmark

CLASSES = ["real", "sngan"]
SEMANTICS = [("faces", True), ("rooms", False)]
# test: every (class, semantic) cell has one sample of each; dealt over 3 tars so that the
# last tar holds clean samples only
TEST_CORRUPTIONS = ["fog", "snow", "jpeg_compression", "none"]
SIDE = 8


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    rows, n = [], 0
    for split, corruptions in (("train", ["none", "none"]), ("test", TEST_CORRUPTIONS)):
        by_shard: dict[str, list] = {}
        for label, source in enumerate(CLASSES):
            for sem_label, (semantic, seen) in enumerate(SEMANTICS):
                for j, corruption in enumerate(corruptions):
                    row = {c: None for c in MANIFEST_SCHEMA.names}
                    if split == "train":
                        shard = "train-000000.tar"
                    elif corruption == "none":
                        shard = "test-000002.tar"
                    else:
                        shard = f"test-{j % 2:06d}.tar"
                    row.update(key=f"{source}-{semantic}-s{n:04d}", split=split, source=source,
                               label=label, semantic=semantic, semantic_label=sem_label, seen=seen,
                               corruption=corruption,
                               severity=0 if corruption == "none" else 1 + j,
                               corruption_seen=corruption != "snow", latent_seed=n, shard=shard)
                    by_shard.setdefault(shard, []).append(row)
                    n += 1
        for shard, members in sorted(by_shard.items()):
            for pos, row in enumerate(members):
                row["position"] = pos
            write_shard(root / shard, [ShardSample(r["key"], _png(_image(r["latent_seed"])),
                                                   dict(r)) for r in members])
            rows += members
    write_manifest(rows, root / "manifest.parquet")
    semantics = [{"name": s, "label": i, "seen": seen} for i, (s, seen) in enumerate(SEMANTICS)]
    (root / "classes.json").write_text(json.dumps({"classes": CLASSES, "semantics": semantics}))
    return root


def _manifest(root: Path, split: str) -> list[dict]:
    return open_benchmark(root).manifest(split=split).to_pylist()


def test_the_short_name_is_the_one_reader(folder):
    assert public.open_benchmark is open_benchmark
    bench = public.open_benchmark(folder)
    assert bench.classes == ("real", "sngan") and bench.splits == ("train", "test")


def test_a_split_streams_every_sample_as_stored_in_manifest_order(folder):
    samples = list(open_benchmark(folder).dataset("test"))
    rows = _manifest(folder, "test")
    assert [s["key"] for s in samples] == [r["key"] for r in rows]
    for s, r in zip(samples, rows):
        assert s["image"].dtype == torch.uint8 and s["image"].shape == (3, SIDE, SIDE)
        assert np.array_equal(s["image"].permute(1, 2, 0).numpy(), _image(r["latent_seed"]))
        assert (s["label"], s["semantic_label"], s["seen"], s["corruption"], s["severity"]) == (
            r["label"], r["semantic_label"], r["seen"], r["corruption"], r["severity"])


def test_seen_only_and_corruption_filters(folder):
    bench = open_benchmark(folder)
    rows = _manifest(folder, "test")
    seen = [s["key"] for s in bench.dataset("test", seen_only=True)]
    assert seen == [r["key"] for r in rows if r["seen"]]
    picked = [s["key"] for s in bench.dataset("test", corruptions=["snow", "none"])]
    assert picked == [r["key"] for r in rows if r["corruption"] in ("snow", "none")]
    both = [s["key"] for s in bench.dataset("test", seen_only=True, corruptions={"fog"})]
    assert both == [r["key"] for r in rows if r["seen"] and r["corruption"] == "fog"]
    assert len(both) == 2


def test_only_the_shards_holding_a_kept_sample_are_read(folder, tmp_path):
    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    clean_only = copy / "test-000002.tar"
    clean_only.write_bytes(clean_only.read_bytes()[:700])  # cut inside its first member
    bench = open_benchmark(copy)
    assert len(list(bench.dataset("test", corruptions=["fog", "snow", "jpeg_compression"]))) == 12
    with pytest.raises(tarfile.ReadError, match="test-000002.tar"):
        list(bench.dataset("test", corruptions=["none"]))


def test_a_dataloader_with_workers_gets_every_sample_once(folder):
    data = open_benchmark(folder).dataset("test")
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2)
    keys = [k for batch in loader for k in batch["key"]]
    assert sorted(keys) == sorted(r["key"] for r in _manifest(folder, "test"))
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=3)))
    assert batch["image"].shape == (3, 3, SIDE, SIDE) and batch["label"].dtype == torch.int64


@pytest.mark.parametrize("corruptions, message", [
    (["fgo"], r"unknown name\(s\) \['fgo'\]"),
    ("fog", r"write \['fog'\]"),
])
def test_bad_corruption_names_are_refused(folder, corruptions, message):
    with pytest.raises(ValueError, match=message):
        open_benchmark(folder).dataset("test", corruptions=corruptions)


def test_a_filter_nothing_matches_and_a_missing_split_are_named(folder):
    bench = open_benchmark(folder)
    with pytest.raises(ValueError, match="no train samples with seen_only=False, corruptions=\\['fog'\\]"):
        bench.dataset("train", corruptions=["fog"])
    with pytest.raises(ValueError, match="no val samples"):
        bench.dataset("val")
    with pytest.raises(BenchmarkError, match="no 'val' samples"):
        bench.shards("val")
