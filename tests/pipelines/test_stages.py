"""One TestPipeline test per stage that has no test module of its own: tiny inputs, real maths."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from benchmark.config import FeaturesSpec, InceptionSpec, SelectionSpec, SplitsSpec
from benchmark.images import decode_image, encode_png
from benchmark.keys import synthetic_key
from benchmark.real_sets import RealFile
from benchmark.records import (CANDIDATE, REAL_CLASS, REFERENCE, FeatureBatch, ImageBatch, ModelRef,
                               Placement, RealChunk)
from benchmark.manifest import SampleRecord, StoredSample
from benchmark.splits import assign_shards
from pipelines.assign_shards import AssignShards
from pipelines.assign_splits import AssignSplits
from pipelines.compute import ComputeSettings
from pipelines.compute_features import ComputeFeatures
from pipelines.read_real import ReadRealImages
from pipelines.sample_generators import SampleGenerators
from pipelines.select_by_quality import SelectByQuality
from pipelines.stage_metrics import METER
from pipelines.write_records import WriteRecords
from pipelines.write_shards import WriteShards
from tests.conftest import write_photos

CPU = ComputeSettings("cpu", 1)


def _rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_read_real_images_resizes_keeps_ranks_and_rejects_broken_files(tmp_path):
    paths = write_photos(tmp_path / "faces", 3, 0, size=(40, 24))
    (tmp_path / "faces" / "bad.jpg").write_bytes(b"not a jpeg")
    files = tuple(RealFile(f"real-faces-{i:05d}", str(p))
                  for i, p in enumerate([*paths[:2], tmp_path / "faces" / "bad.jpg", paths[2]]))
    chunk = RealChunk("real-faces-real_class-c000000", "faces", REAL_CLASS, files, first_rank=10)
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create([chunk]) | ReadRealImages(16, {"faces": str(tmp_path / "faces")})
               | beam.Map(lambda b: (b.keys, b.ranks, b.origins, b.role,
                                     [decode_image(x).shape for x in b.pngs],
                                     [(r["key"], r["stage"]) for r in b.rejections])))
        assert_that(out, equal_to([(("real-faces-00000", "real-faces-00001", "real-faces-00003"),
                                    (10, 11, 13), ("00000.jpg", "00001.jpg", "00002.jpg"), REAL_CLASS,
                                    [(16, 16, 3)] * 3, [("real-faces-00002", "read_real")])]))


def test_read_real_records_unreadable_tiny_and_bomb_photos_with_reasons(tmp_path, monkeypatch):
    """An unreadable file (injected: tests run as root, where permissions do not bite), a photo
    under real.min_side and one over real.max_pixels each become a rejection; the rest are kept."""
    import errno
    import os

    paths = write_photos(tmp_path / "faces", 2, 0, size=(40, 24))
    write_photos(tmp_path / "tiny", 1, 1, size=(12, 12))
    write_photos(tmp_path / "huge", 1, 2, size=(300, 300))
    locked = tmp_path / "faces" / "00001.jpg"
    real_read = Path.read_bytes

    def read_bytes(self):
        if self == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    files = (RealFile("real-faces-a", str(paths[0])), RealFile("real-faces-b", str(locked)),
             RealFile("real-faces-c", str(tmp_path / "tiny" / "00000.jpg")),
             RealFile("real-faces-d", str(tmp_path / "huge" / "00000.jpg")))
    chunk = RealChunk("real-faces-real_class-c000000", "faces", REAL_CLASS, files, first_rank=0)
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create([chunk])
               | ReadRealImages(16, {"faces": str(tmp_path)}, max_pixels=50_000, min_side=16)
               | beam.Map(lambda b: (b.keys, sorted((r["key"], r["reason"].split(":")[0].split(" (")[0])
                                                    for r in b.rejections))))
        assert_that(out, equal_to([(("real-faces-a",),
                                    [("real-faces-b", "unreadable"), ("real-faces-c", "image too small"),
                                     ("real-faces-d", "decompression bomb")])]))


def test_sample_generators_draws_every_index_once_with_its_key(tmp_path):
    for i in range(5):
        (tmp_path / f"{i:02d}.png").write_bytes(encode_png(_rgb(i)))
    import generators

    sha = generators.load("folder", folder=tmp_path, resolution=16).checkpoint_sha256
    model = ModelRef("blackbox", "faces", "folder", "", str(tmp_path), sha, samples=5)
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create([model]) | SampleGenerators(2, 16, CPU, seed=1)
               | beam.FlatMap(lambda b: [(k, r, b.role, decode_image(x).tolist() == _rgb(r).tolist())
                                         for k, r, x in zip(b.keys, b.ranks, b.pngs)]))
        assert_that(out, equal_to([(synthetic_key("blackbox", "faces", i), i, CANDIDATE, True)
                                   for i in range(5)]))


def test_compute_features_keys_candidates_by_cell_and_references_by_every_source():
    spec = FeaturesSpec(inception=InceptionSpec(weights="random", input_size=75, precision="fp32",
                                                batch_size=4))
    cand = ImageBatch("c1", "sngan", "faces", CANDIDATE, ("k0", "k1"), (encode_png(_rgb(0)), encode_png(_rgb(1))),
                      (0, 1), ("", ""), "sngan", "0" * 64, latent_seeds=(5, 6))
    ref = ImageBatch("r1", "real", "faces", REFERENCE, ("r0",), (encode_png(_rgb(2)),), (0,), ("a.jpg",),
                     "photo", "")
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create([cand, ref]) | ComputeFeatures("inception", spec, CPU, ("sngan", "progan"))
               | beam.Map(lambda kv: (kv[0], kv[1].chunk_id, kv[1].role, kv[1].features.shape)))
        assert_that(out, equal_to([(("sngan", "faces"), "c1", CANDIDATE, (2, 2048)),
                                   (("sngan", "faces"), "r1", REFERENCE, (1, 2048)),
                                   (("progan", "faces"), "r1", REFERENCE, (1, 2048))]))


def test_select_by_quality_keeps_the_closest_and_the_first_real_photos():
    # Four candidates on a line, references at 0: with one cluster the two nearest are kept.
    feats = np.array([[3.0, 0], [0.5, 0], [2.0, 0], [0.1, 0]], np.float32)
    synthetic = [(("sngan", "faces"), FeatureBatch("c1", CANDIDATE, ("a", "b", "c", "d"), feats))]
    reference = [(("sngan", "faces"), FeatureBatch("r1", REFERENCE, ("r",), np.zeros((1, 2), np.float32)))]
    real = [ImageBatch("p1", "real", "faces", REAL_CLASS, ("p2", "p0", "p1"), (b"", b"", b""), (2, 0, 1),
                       ("", "", ""), "photo", "")]
    spec = SelectionSpec(clusters=1, per_cluster=2, reference_count=1)
    with test_pipeline.TestPipeline() as p:
        out = ((p | "S" >> beam.Create(synthetic), p | "R" >> beam.Create(reference),
                p | "P" >> beam.Create(real))
               | SelectByQuality(spec, keep=2, seed=0)
               | beam.Map(lambda kv: (kv[0], sorted(pl.key for pl in kv[1]))))
        assert_that(out, equal_to([(("sngan", "faces"), ["b", "d"]), (("real", "faces"), ["p0", "p1"])]))


def test_select_by_quality_refuses_a_cell_or_real_class_short_of_a_planned_chunk():
    from benchmark.plan import ChunkCounts, LostChunksError
    from pipelines.select_by_quality import _keep_real, _SelectCellFn

    feats = np.array([[3.0, 0], [0.5, 0]], np.float32)
    grouped = {"synthetic": [FeatureBatch("c1", CANDIDATE, ("a", "b"), feats)] * 2,  # twice: one chunk
               "reference": [FeatureBatch("r1", REFERENCE, ("r",), np.zeros((1, 2), np.float32))]}
    spec = SelectionSpec(clusters=1, per_cluster=1, reference_count=1)
    complete = ChunkCounts({("sngan", "faces"): 1}, {("faces", REFERENCE): 1, ("faces", REAL_CLASS): 1})
    fn = _SelectCellFn(spec, 1, 0, METER, complete)
    assert [pl.key for _, cell in fn.process((("sngan", "faces"), grouped)) for pl in cell] == ["b"]
    short = ChunkCounts({("sngan", "faces"): 2}, {("faces", REFERENCE): 1})
    with pytest.raises(LostChunksError, match="cell sngan-faces, sample features: 1 of 2"):
        list(_SelectCellFn(spec, 1, 0, METER, short).process((("sngan", "faces"), grouped)))
    no_refs = ChunkCounts({("sngan", "faces"): 1}, {("faces", REFERENCE): 2})
    with pytest.raises(LostChunksError, match="reference features: 1 of 2"):
        list(_SelectCellFn(spec, 1, 0, METER, no_refs).process((("sngan", "faces"), grouped)))
    real = ImageBatch("p1", "real", "faces", REAL_CLASS, ("p0",), (b"",), (0,), ("",), "photo", "")
    assert len(list(_keep_real(("faces", [real]), 1, METER, complete))) == 1
    with pytest.raises(LostChunksError, match="semantic faces, Real-class photos: 1 of 2"):
        list(_keep_real(("faces", [real]), 1, METER,
                        ChunkCounts({}, {("faces", REAL_CLASS): 2})))


def test_assign_splits_gives_each_cell_its_exact_counts():
    cell = [Placement(key=f"k{i}", chunk_id="c", source="sngan", semantic="faces") for i in range(6)]
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create([(("sngan", "faces"), cell)])
               | AssignSplits(SplitsSpec(train=3, val=2, test=1), seed=4)
               | beam.Map(lambda pl: pl.split) | beam.combiners.Count.PerElement())
        assert_that(out, equal_to([("train", 3), ("val", 2), ("test", 1)]))


def test_assign_shards_places_each_split_by_key_hash():
    keys = [f"k{i}" for i in range(5)]
    placements = [Placement(key=k, chunk_id=f"c{i % 2}", source="sngan", semantic="faces", split="val")
                  for i, k in enumerate(keys)]
    where = assign_shards(sorted(keys), 9, 2)
    with test_pipeline.TestPipeline() as p:
        out = (p | beam.Create(placements) | AssignShards(seed=9, max_samples=2)
               | beam.Map(lambda kv: (kv[0], kv[1].key, kv[1].shard, kv[1].position)))
        assert_that(out, equal_to([(f"c{i % 2}", k, where[k].shard, where[k].position)
                                   for i, k in enumerate(keys)]))


def _sample(key: str, split: str, position: int) -> StoredSample:
    png = encode_png(_rgb(position))
    placement = Placement(key=key, chunk_id="c", source="sngan", semantic="faces", split=split,
                          shard=0, position=position, cluster=0, distance=0.5)
    batch = ImageBatch("c", "sngan", "faces", CANDIDATE, (key,), (png,), (position,), ("",),
                       "sngan", "0" * 64, latent_seeds=(position,))
    return StoredSample(SampleRecord.clean(placement, batch, 0, label=1, semantic_label=0, seen=True), png)


def test_write_shards_writes_each_tar_in_position_order_and_emits_its_rows(tmp_path):
    samples = [_sample("b", "val", 1), _sample("a", "val", 0), _sample("c", "test", 0)]
    with test_pipeline.TestPipeline() as p:
        out = p | beam.Create(samples) | WriteShards(str(tmp_path)) | beam.Map(lambda r: r.key)
        assert_that(out, equal_to(["a", "b", "c"]))
    with tarfile.open(tmp_path / "val-000000.tar") as tar:
        assert tar.getnames() == ["a.json", "a.png", "b.json", "b.png"]
        assert json.loads(tar.extractfile("b.json").read()) == samples[0].record.row()
        assert tar.extractfile("b.png").read() == samples[0].png


def test_write_records_writes_both_tables_sorted(tmp_path):
    import pyarrow as pa

    from benchmark.manifest import MANIFEST_SCHEMA

    def row(key, split, position):
        values = {f.name: (False if pa.types.is_boolean(f.type) else 0 if pa.types.is_integer(f.type)
                           else 0.0 if pa.types.is_floating(f.type) else "") for f in MANIFEST_SCHEMA}
        return {**values, "key": key, "split": split, "shard": f"{split}-000000.tar", "position": position}

    rows = [row("t1", "test", 0), row("v1", "val", 1), row("v0", "val", 0)]
    rejection = {"key": "real-faces-00002", "source": "real", "semantic": "faces",
                 "path": "/x/bad.jpg", "stage": "read_real", "reason": "not an image"}
    with test_pipeline.TestPipeline() as p:
        out = ((p | "M" >> beam.Create(rows), p | "R" >> beam.Create([rejection]))
               | WriteRecords(str(tmp_path)))
        assert_that(out, equal_to([3]))
    assert pq.read_table(tmp_path / "manifest.parquet").column("key").to_pylist() == ["v0", "v1", "t1"]
    assert pq.read_table(tmp_path / "rejections.parquet").to_pylist() == [rejection]


def test_assign_shards_refuses_a_doubled_key_instead_of_dropping_it():
    twice = [Placement(key="k0", chunk_id=c, source="sngan", semantic="faces", split="val")
             for c in ("c0", "c1")]
    with pytest.raises(Exception, match=r"split val: duplicate keys \['k0'\]"):
        with test_pipeline.TestPipeline() as p:
            _ = p | beam.Create(twice) | AssignShards(seed=9, max_samples=2)
