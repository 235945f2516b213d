"""Resume mechanics: CachedStage runs its stage only on what the store lacks, WriteShards keeps
finished shards, the driver starts over on --fresh. (The kill-and-rerun test of the real command
is in test_build_e2e.py, beside the uninterrupted build it compares with.)"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from apache_beam.testing.util import assert_that, equal_to

from benchmark.chunk_cache import CellFeatures, ChunkStore
from benchmark.images import decode_image, encode_png
from benchmark.records import CANDIDATE, FeatureBatch, ImageBatch
from pipelines.cached_stage import CachedStage
from pipelines.stage_metrics import METER, NAMESPACE
from tests.pipelines.test_stages import _sample

RULES = CellFeatures("mean", {"what": "channel means"}, "random", "cpu", 1)


def _means(batch: ImageBatch) -> np.ndarray:
    return np.stack([decode_image(p).mean(axis=(0, 1)) for p in batch.pngs]).astype(np.float32)


def _channel_means(batch: ImageBatch):
    """A small real stage with the features stage's shape: one output per batch, its chunk id."""
    METER.count("computed_batches")
    return (batch.source, batch.semantic), FeatureBatch(batch.chunk_id, batch.role, batch.keys,
                                                        _means(batch))


def _batch(i: int, shift: int = 0) -> ImageBatch:
    rng = np.random.default_rng(i + shift)
    pngs = tuple(encode_png(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)) for _ in range(2))
    return ImageBatch(f"sngan-faces-c{i:06d}", "sngan", "faces", CANDIDATE,
                      (f"sngan-faces-s{2 * i:08d}", f"sngan-faces-s{2 * i + 1:08d}"), pngs, (2 * i, 2 * i + 1),
                      ("", ""), "sngan", "a" * 64, latent_seeds=(1, 2))


def _run(root, batches) -> dict[str, int]:
    """Run the cached stage; asserts every output equals the stage's own; returns the counters."""
    expected = [(b.chunk_id, _means(b).tobytes()) for b in batches]
    p = beam.Pipeline()
    out = (p | beam.Create(batches)
           | CachedStage(beam.Map(_channel_means), str(root), RULES)
           | beam.Map(lambda kv: (kv[1].chunk_id, kv[1].features.tobytes())))
    assert_that(out, equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in counters}


def test_a_rerun_computes_only_what_the_store_lacks(tmp_path):
    batches = [_batch(i) for i in range(3)]
    first = _run(tmp_path, batches)
    assert first["computed_batches"] == 3 and "features_from_cache" not in first
    again = _run(tmp_path, batches)
    assert "computed_batches" not in again and again["features_from_cache"] == 6

    # One entry damaged, one batch with other pixels (another key): those two are computed.
    store = ChunkStore(tmp_path)
    damaged = store.entry_path(RULES.key(batches[0]))
    damaged.write_bytes(damaged.read_bytes()[:-1])
    changed = [batches[0], batches[1], _batch(2, shift=10)]
    third = _run(tmp_path, changed)
    assert third["computed_batches"] == 2 and third["cache_rejected"] == 1
    assert third["features_from_cache"] == 2
    assert "computed_batches" not in _run(tmp_path, changed)  # the damaged entry was rewritten


def _write(out_dir, samples) -> dict[str, int]:
    from pipelines.write_shards import WriteShards

    p = beam.Pipeline()
    _ = p | beam.Create(samples) | WriteShards(str(out_dir), str(out_dir / "done"))
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]
    return {c.key.metric.name: c.committed for c in counters}


def test_write_shards_keeps_a_finished_shard_and_rewrites_a_changed_one(tmp_path):
    samples = [_sample("a", "val", 0), _sample("b", "val", 1), _sample("c", "test", 0)]
    first = _write(tmp_path, samples)
    assert (first["shards_written"], first["written"]) == (2, 3) and "shards_kept" not in first
    val = tmp_path / "val-000000.tar"
    before = (val.read_bytes(), val.stat().st_mtime_ns, (tmp_path / "test-000000.tar").read_bytes())
    again = _write(tmp_path, samples)
    assert again["shards_kept"] == 2 and "shards_written" not in again
    assert val.stat().st_mtime_ns == before[1]  # not even rewritten with the same bytes
    other = _sample("c", "test", 0)
    other = type(other)(other.record, encode_png(np.zeros((16, 16, 3), np.uint8)))
    third = _write(tmp_path, [samples[0], samples[1], other])
    assert (third["shards_kept"], third["shards_written"]) == (1, 1)
    assert val.read_bytes() == before[0] and (tmp_path / "test-000000.tar").read_bytes() != before[2]


def test_fresh_removes_every_partial_build_of_out_and_resuming_only_half_written_files(tmp_path):
    from pipelines.build_attribution88 import _prepare_staging, staging_folders

    out = tmp_path / "a88"
    mine, other = tmp_path / ".a88.partial-aaaaaaaaaaaa", tmp_path / ".a88.partial-bbbbbbbbbbbb"
    unrelated = tmp_path / ".a88x.partial-cccccccccccc"  # another OUT's
    for folder in (mine, other, unrelated):
        (folder / "cache").mkdir(parents=True)
        (folder / "train-000000.tar").write_bytes(b"finished")
    stale = mine / f".train-000001.tar.{'0' * 32}.tmp"
    stale.write_bytes(b"half")
    _prepare_staging(out, mine, fresh=False)  # resume: another setting's folder is left alone
    assert staging_folders(out) == [mine, other] and not stale.exists()
    assert (mine / "train-000000.tar").exists()
    _prepare_staging(out, mine, fresh=True)
    assert staging_folders(out) == [] and unrelated.is_dir()


def test_the_command_line_passes_fresh_and_resume_cache_to_the_build(tmp_path, monkeypatch):
    import pipelines.build_attribution88 as cli
    from tests.pipelines.test_build_e2e import write_tiny_inputs

    seen = {}

    def fake_build(cfg, beam_args, **kwargs):
        seen.update(kwargs)
        raise cli.BuildError("stop here")

    monkeypatch.setattr(cli, "build", fake_build)
    config = write_tiny_inputs(tmp_path)
    assert cli.main(["--config", str(config), "--fresh", "--resume-cache", "features"]) == 1
    assert seen == {"overwrite": False, "fresh": True, "resume_cache": "features"}
    assert cli.RESUME_CHOICES["features"] == (CellFeatures.stage,)
