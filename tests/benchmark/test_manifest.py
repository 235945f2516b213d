"""SampleRecord: the manifest schema declared once, records made by their constructors only."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from benchmark.keys import DuplicateKeyError, check_unique
from benchmark.manifest import MANIFEST_SCHEMA, SampleRecord, write_manifest
from benchmark.protocol import CLEAN
from benchmark.records import CANDIDATE, REAL_CLASS, ImageBatch, Placement
from benchmark.shards import ShardSample, write_shard
from benchmark.splits import assign_shards, assign_splits


def _sampled() -> SampleRecord:
    placement = Placement(key="sngan-faces-s00000003", chunk_id="c", source="sngan", semantic="faces",
                          split="val", shard=2, position=5, cluster=1, distance=0.25, filled=True)
    batch = ImageBatch("c", "sngan", "faces", CANDIDATE, ("x", "sngan-faces-s00000003"), (b"a", b"png"),
                       (2, 3), ("", ""), "sngan", "f" * 64, latent_seeds=(70, 71))
    return SampleRecord.clean(placement, batch, 1, label=1, semantic_label=0, seen=True)


def test_clean_record_of_a_sampled_image():
    r = _sampled()
    assert (r.sample_index, r.latent_seed, r.origin, r.generator) == (3, 71, "", "sngan")
    assert (r.shard, r.position, r.cluster, r.distance, r.filled) == ("val-000002.tar", 5, 1, 0.25, True)
    assert (r.corruption, r.severity, r.corruption_seen, r.corruption_seed) == (CLEAN, 0, True, 0)
    assert (r.sha256, r.png_bytes) == (hashlib.sha256(b"png").hexdigest(), 3)


def test_clean_record_of_a_real_photo_has_no_latent_and_a_null_distance():
    placement = Placement(key="real-faces-00001", chunk_id="c", source="real", semantic="faces",
                          split="train", shard=0, position=0)
    batch = ImageBatch("c", "real", "faces", REAL_CLASS, ("real-faces-00001",), (b"p",), (9,),
                       ("a/b.jpg",), "photo", "")
    r = SampleRecord.clean(placement, batch, 0, label=0, semantic_label=1, seen=False)
    assert (r.sample_index, r.latent_seed, r.origin, r.distance, r.cluster) == (-1, -1, "a/b.jpg", None, -1)


def test_corrupted_changes_only_the_corruption_and_the_png_fields():
    r = _sampled()
    c = r.corrupted("fog", 3, 99, seen=False, png=b"fogged")
    assert (c.corruption, c.severity, c.corruption_seed, c.corruption_seen) == ("fog", 3, 99, False)
    assert (c.sha256, c.png_bytes) == (hashlib.sha256(b"fogged").hexdigest(), 6)
    changed = {k for k, v in c.row().items() if r.row()[k] != v}
    assert changed == {"corruption", "severity", "corruption_seed", "corruption_seen", "sha256", "png_bytes"}


def test_records_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _sampled().split = "train"


def test_the_schema_is_read_off_the_record_and_both_writers_use_it(tmp_path):
    names = [f.name for f in dataclasses.fields(SampleRecord)]
    assert MANIFEST_SCHEMA.names == names == list(_sampled().row())
    r = _sampled()
    table = write_manifest([r], tmp_path / "m.parquet")
    assert pq.read_table(tmp_path / "m.parquet").schema.equals(MANIFEST_SCHEMA)
    assert table.to_pylist() == [r.row()]
    write_shard(tmp_path / "val-000002.tar", [ShardSample(r.key, b"png", r.row())])
    import tarfile

    with tarfile.open(tmp_path / "val-000002.tar") as tar:
        assert json.loads(tar.extractfile(f"{r.key}.json").read()) == r.row()
    with pytest.raises(ValueError, match="missing"):
        write_manifest([{k: v for k, v in r.row().items() if k != "seen"}], tmp_path / "bad.parquet")


def test_a_duplicate_key_is_an_error_naming_it():
    with pytest.raises(DuplicateKeyError, match=r"split val: duplicate keys \['b'\]"):
        check_unique(["a", "b", "c", "b"], "split val")
    check_unique(["a", "b"], "fine")
    with pytest.raises(DuplicateKeyError, match="one cell"):
        assign_splits(["a", "a"], {"train": 2, "val": 0, "test": 0}, 0)
    with pytest.raises(DuplicateKeyError, match="one split"):
        assign_shards(["a", "a"], 0, 10)


# KEY.json of _sampled() as the code before SampleRecord wrote it (pipelines/materialize_samples
# assembled the dict itself): the record must keep every stored byte.
BEFORE_SAMPLE_RECORD = (
    '{"checkpoint_sha256":"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",'
    '"cluster":1,"corruption":"none","corruption_seed":0,"corruption_seen":true,"distance":0.25,'
    '"filled":true,"generator":"sngan","key":"sngan-faces-s00000003","label":1,"latent_seed":71,'
    '"origin":"","png_bytes":3,"position":5,"sample_index":3,"seen":true,"semantic":"faces",'
    '"semantic_label":0,"severity":0,'
    '"sha256":"8f8cbb7dcf46e0bc7d53265749a6c17d116093a6ba95e442764060c76fd4a86c",'
    '"shard":"val-000002.tar","source":"sngan","split":"val"}')


def test_the_stored_json_is_byte_identical_to_the_dict_it_replaced():
    from benchmark.shards import encode_meta

    assert encode_meta(_sampled().row()).decode() == BEFORE_SAMPLE_RECORD
