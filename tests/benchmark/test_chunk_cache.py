"""The resume store: keys that change with every setting, exact round trips, no trust in damage."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.atomic import atomic_path, remove_stale_temporaries
from benchmark.chunk_cache import (CellFeatures, ChunkStore, CorruptEntry, FinishedShards,
                                   SampledChunks, decode_cell_features, decode_image_batch,
                                   encode_cell_features, encode_image_batch)
from benchmark.images import encode_png
from benchmark.keys import latent_seed
from benchmark.records import CANDIDATE, REFERENCE, FeatureBatch, ImageBatch, ModelRef, SampleChunk
from benchmark.shards import ShardSample, write_shard

ROOT = Path(__file__).resolve().parents[2]


def _png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


def _chunk(ckpt: Path, seed: int = 3, sha: str = "a" * 64) -> SampleChunk:
    model = ModelRef("sngan", "faces", "sngan", str(ckpt), "", sha, samples=4)
    seeds = tuple(latent_seed(seed, "sngan", "faces", "sngan", i) for i in range(4))
    return SampleChunk("sngan-faces-c000000", model, 0, 4, seeds)


def _batch(role: str = CANDIDATE, pngs=(b"",)) -> ImageBatch:
    pngs = tuple(_png(i) for i in range(2)) if pngs == (b"",) else pngs
    return ImageBatch("sngan-faces-c000000", "sngan", "faces", role, ("sngan-faces-s00000000",
                      "sngan-faces-s00000001"), pngs, (0, 1), ("", ""), "sngan", "b" * 64,
                      latent_seeds=(11, 2**62 + 5))


def _features(**changes) -> CellFeatures:
    args = {"extractor": "inception", "settings": {"input_size": 75, "precision": "fp32"},
            "weights": "random", "device": "cpu", "torch_threads": 1, **changes}
    return CellFeatures(args["extractor"], args["settings"], args["weights"], args["device"],
                        args["torch_threads"])


def test_sample_key_changes_with_seed_weights_sidecar_resolution_and_device(tmp_path):
    ckpt = tmp_path / "sngan-faces.safetensors"
    ckpt.write_bytes(b"weights")
    (tmp_path / "sngan-faces.json").write_text('{"options": {"truncation_psi": 1.0}}')
    base = SampledChunks(32, "cpu", 1).key(_chunk(ckpt))
    assert SampledChunks(32, "cpu", 1).key(_chunk(ckpt)) == base  # stable
    assert SampledChunks(32, "cpu", 1).key(_chunk(ckpt, seed=4)) != base  # another build seed
    assert SampledChunks(32, "cpu", 1).key(_chunk(ckpt, sha="c" * 64)) != base  # other weights
    assert SampledChunks(64, "cpu", 1).key(_chunk(ckpt)) != base
    assert SampledChunks(32, "cuda", 1).key(_chunk(ckpt)) != base
    assert SampledChunks(32, "cpu", 2).key(_chunk(ckpt)) != base
    # the sidecar's sampling options decide the images too, though the weights are the same
    (tmp_path / "sngan-faces.json").write_text('{"options": {"truncation_psi": 0.7}}')
    assert SampledChunks(32, "cpu", 1).key(_chunk(ckpt)) != base


def test_sample_key_of_a_latent_diffusion_folder_covers_every_config_and_the_settings(tmp_path):
    """An LDM folder's images depend on the U-Net's, the autoencoder's (scaling_factor) and the
    scheduler's configs and on the sampler settings, none of which the weights digest covers."""
    for name in ("unet/config.json", "vqvae/config.json", "scheduler/scheduler_config.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text('{"scaling_factor": 0.5}')

    def key(settings=(("sample_steps", 50),)):
        model = ModelRef("latent", "faces", "ldm", "", str(tmp_path), "a" * 64, 4, settings)
        return SampledChunks(32, "cpu", 1).key(SampleChunk("latent-faces-c000000", model, 0, 4, (1, 2, 3, 4)))

    base = key()
    assert key() == base and key((("sample_steps", 20),)) != base
    for name in ("unet/config.json", "vqvae/config.json", "scheduler/scheduler_config.json"):
        (tmp_path / name).write_text('{"scaling_factor": 0.25}')
        assert key() != base, name
        (tmp_path / name).write_text('{"scaling_factor": 0.5}')
    assert key() == base


def test_a_folder_of_images_is_never_cached(tmp_path):
    model = ModelRef("blackbox", "faces", "folder", "", str(tmp_path), "d" * 64, samples=2)
    assert not SampledChunks(32, "cpu", 1).cacheable(SampleChunk("c", model, 0, 2, (1, 2)))


def test_feature_key_changes_with_settings_weights_and_pixels(tmp_path):
    base = _features().key(_batch())
    assert _features().key(_batch()) == base
    assert _features(settings={"input_size": 99, "precision": "fp32"}).key(_batch()) != base
    assert _features(extractor="lpips").key(_batch()) != base
    assert _features().key(_batch(pngs=(_png(0), _png(7)))) != base  # one image differs
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"one")
    first = _features(weights=str(weights)).key(_batch())
    weights.write_bytes(b"two")  # same path, other file: another key
    assert first != base and _features(weights=str(weights)).key(_batch()) != first


def test_entries_round_trip_exactly(tmp_path):
    store = ChunkStore(tmp_path)
    batch = _batch()
    store.put("1" * 64, encode_image_batch(batch))
    assert decode_image_batch(store.get("1" * 64)) == batch
    feats = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    element = (("real", "faces"), FeatureBatch("r", REFERENCE, ("a", "b"), feats))
    store.put("2" * 64, encode_cell_features(element))
    cell, got = decode_cell_features(store.get("2" * 64))
    assert cell == ("real", "faces") and (got.chunk_id, got.role, got.keys) == ("r", REFERENCE, ("a", "b"))
    assert got.features.dtype == np.float32 and got.features.tobytes() == feats.tobytes()
    assert store.get("3" * 64) is None


@pytest.mark.parametrize("damage", ["truncate", "flip", "misfile", "garbage"])
def test_a_damaged_entry_raises_and_is_never_returned(tmp_path, damage):
    store = ChunkStore(tmp_path)
    key, other = "4" * 64, "5" * 64
    store.put(key, encode_image_batch(_batch()))
    path = store.entry_path(key)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-10])
    elif damage == "flip":
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 20)
    else:  # a valid entry under another key's name
        store.entry_path(other).parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, store.entry_path(other))
        key = other
    with pytest.raises(CorruptEntry, match=str(store.entry_path(key).name)):
        store.get(key)
    store.put(key, encode_image_batch(_batch()))  # recomputed: the entry is whole again
    assert decode_image_batch(store.get(key)) == _batch()


def test_claims_tie_a_chunk_id_to_its_key(tmp_path):
    store = ChunkStore(tmp_path)
    assert store.claimed("sngan-faces-c000000") is None
    store.claim("sngan-faces-c000000", "6" * 64)
    assert store.claimed("sngan-faces-c000000") == "6" * 64


def _shard_samples(n: int, seed: int = 0) -> list[ShardSample]:
    return [ShardSample(f"k{i}", _png(seed + i), {"i": i}) for i in range(n)]


def test_a_finished_shard_is_kept_only_while_its_samples_and_bytes_are_the_same(tmp_path):
    done = FinishedShards(tmp_path / "done")
    path = tmp_path / "train-000000.tar"
    samples = _shard_samples(3)
    assert not done.is_finished(path, samples)
    done.mark_finished(path, samples, write_shard(path, samples))
    assert done.is_finished(path, samples)
    assert not done.is_finished(path, _shard_samples(3, seed=1))  # other pixels
    assert not done.is_finished(path, [dataclasses.replace(samples[0], meta={"i": 9}), *samples[1:]])
    data = bytearray(path.read_bytes())
    data[600] ^= 1  # same size, one byte off
    path.write_bytes(bytes(data))
    assert not done.is_finished(path, samples)
    path.unlink()
    assert not done.is_finished(path, samples)


def test_stale_temporaries_of_atomic_writes_are_removed_and_nothing_else(tmp_path):
    keep = [tmp_path / "notes.tmp", tmp_path / ".x.tmp", tmp_path / "train-000000.tar"]
    for f in keep:
        f.write_bytes(b"x")
    with atomic_path(tmp_path / "sub" / "train-000001.tar") as tmp:
        tmp.write_bytes(b"tar")
        # what a writer killed before its rename leaves: a temporary named as atomic_path names them
        leftover = tmp.with_name(tmp.name.replace("000001", "000002"))
        os.link(tmp, leftover)
    assert remove_stale_temporaries(tmp_path) == 1
    assert not leftover.exists() and (tmp_path / "sub" / "train-000001.tar").exists()
    assert all(f.exists() for f in keep)


def test_fault_hook_kills_the_process_on_the_nth_pass():
    code = ("from benchmark.faults import fault_point\n"
            "for i in range(5):\n"
            "    fault_point('write_shards'); print(i, flush=True)\n")
    env = {**os.environ, "A88_FAULT": "write_shards:3"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == -9 and run.stdout.split() == ["0", "1"]
    env["A88_FAULT"] = "sample_generators:1"  # another stage's hook: no effect here
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.split() == ["0", "1", "2", "3", "4"]


def test_fault_hook_refuses_a_malformed_setting(monkeypatch):
    from benchmark.faults import fault_point

    monkeypatch.setenv("A88_FAULT", "write_shard:2")
    with pytest.raises(ValueError, match="A88_FAULT='write_shard:2'"):
        fault_point("write_shards")
