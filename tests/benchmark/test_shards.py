import json

import numpy as np
import pytest
import webdataset as wds

from benchmark.images import decode_image, encode_png
from benchmark.manifest import MANIFEST_SCHEMA, read_manifest, write_manifest
from benchmark.shards import ShardSample, write_shard


def _samples(n):
    rng = np.random.default_rng(0)
    return [ShardSample(key=f"sngan-celeba-s{i:08d}",
                        png=encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
                        meta={"label": 1, "split": "train", "i": i}) for i in range(n)]


def test_shard_round_trips_through_webdataset(tmp_path):
    samples = _samples(5)
    stats = write_shard(tmp_path / "train-000000.tar", samples)
    assert stats.samples == 5
    loaded = list(wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in loaded] == [s.key for s in samples]
    for got, want in zip(loaded, samples):
        assert got["png"] == want.png
        assert json.loads(got["json"]) == want.meta
        assert decode_image(got["png"]).shape == (8, 8, 3)


def test_shard_bytes_are_deterministic_and_no_temp_file_is_left(tmp_path):
    a = write_shard(tmp_path / "a.tar", _samples(3))
    b = write_shard(tmp_path / "b.tar", _samples(3))
    assert a.sha256 == b.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar", "b.tar"]


@pytest.mark.parametrize("bad, message", [
    (lambda s: [s[0], s[0]], "duplicate keys"),
    (lambda s: [ShardSample("a.b", s[0].png, {})], "without '.'"),
    (lambda s: [ShardSample("k", b"", {})], "no PNG payload"),
])
def test_bad_samples_leave_no_shard(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        write_shard(tmp_path / "x.tar", bad(_samples(1)))
    assert list(tmp_path.iterdir()) == []


def _row(key, split, shard, position):
    row = {name: None for name in MANIFEST_SCHEMA.names}
    row.update(key=key, split=split, shard=shard, position=position, label=0, source="real")
    return row


def test_manifest_is_sorted_validated_and_deterministic(tmp_path):
    rows = [_row("b", "test", "test-000000.tar", 0), _row("a", "train", "train-000000.tar", 1),
            _row("c", "train", "train-000000.tar", 0)]
    write_manifest(rows, tmp_path / "m1.parquet")
    write_manifest(list(reversed(rows)), tmp_path / "m2.parquet")
    assert (tmp_path / "m1.parquet").read_bytes() == (tmp_path / "m2.parquet").read_bytes()
    assert read_manifest(tmp_path / "m1.parquet").column("key").to_pylist() == ["c", "a", "b"]
    bad = dict(rows[0])
    del bad["sha256"]
    with pytest.raises(ValueError, match=r"row 0 \(b\): missing \['sha256'\]"):
        write_manifest([bad], tmp_path / "m3.parquet")
    assert not (tmp_path / "m3.parquet").exists()
