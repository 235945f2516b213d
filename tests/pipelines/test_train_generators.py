"""A checkpoint the build trained is reused only when settings and data are the same."""

import dataclasses
import json

import numpy as np
import pytest

import generators
from benchmark.records import TrainTask
from pipelines.train_generators import _reusable


def test_reuse_needs_same_settings_and_data(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    task = TrainTask(source="sngan", semantic="faces", arch="sngan",
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"), steps=1, batch_size=4,
                     lr_g=2e-4, lr_d=2e-4, n_dis=1, samples=8, options={"ch": 8}, seed=5)
    sha = generators.images_sha256(images)
    assert not _reusable(task, sha, 32)  # nothing trained yet
    generators.train("sngan", images, tmp_path / "sngan-faces", steps=1, batch_size=4, seed=5,
                     n_dis=1, options={"ch": 8})
    assert _reusable(task, sha, 32)
    assert not _reusable(task, generators.images_sha256(images[:4]), 32)
    assert not _reusable(task, sha, 64)
    for change in ({"steps": 2}, {"seed": 6}, {"n_dis": 2}, {"lr_g": 1e-3}, {"options": {"ch": 16}},
                   {"options": {"ch": 8, "dim_z": 64}}):
        assert not _reusable(dataclasses.replace(task, **change), sha, 32), change
    sidecar = tmp_path / "sngan-faces.json"
    meta = json.loads(sidecar.read_text())
    # Written by older training code, or under an option default that has since changed: the
    # task names neither, yet the network it would train now is another one.
    for stale in ({**meta, "train": {**meta["train"], "training_version": 1}},
                  {**meta, "options": {k: v for k, v in meta["options"].items() if k != "dim_z"}}):
        sidecar.write_text(json.dumps(stale))
        assert not _reusable(task, sha, 32)
    sidecar.write_text("{not json")
    assert not _reusable(task, sha, 32)


@pytest.fixture
def one_thread():
    """The stage pins torch to the config's thread count; the direct runs here must match it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_stage_resumes_a_training_the_last_build_left_unfinished(tmp_path, one_thread):
    """checkpoint_every travels from the config to generators.train, so a crashed build's
    rerun continues training from the snapshot in its staging folder."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline

    from benchmark.records import ImageBatch
    from benchmark.images import encode_png
    from pipelines.compute import ComputeSettings
    from pipelines.train_generators import TrainGenerators

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    task = TrainTask(source="sngan", semantic="faces", arch="sngan",
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"), steps=4, batch_size=4,
                     lr_g=None, lr_d=None, n_dis=1, samples=8, options={"ch": 8}, seed=5,
                     checkpoint_every=2)
    # What a crashed build leaves behind: a snapshot at step 2 of this very training.
    def crash(stats):
        if stats.step == 3:
            raise RuntimeError("worker lost")
    try:
        generators.train("sngan", images, tmp_path / "sngan-faces", steps=4, batch_size=4, seed=5,
                         n_dis=1, options={"ch": 8}, checkpoint_every=2, progress=crash)
    except RuntimeError:
        pass
    assert (tmp_path / "sngan-faces.resume.json").is_file()
    batch = ImageBatch(chunk_id="faces-0", source="real", semantic="faces", role="gan_train",
                       keys=tuple(f"k{i}" for i in range(8)), pngs=tuple(encode_png(img) for img in images),
                       ranks=tuple(range(8)), origins=("",) * 8, generator="photo", checkpoint_sha256="")
    with TestPipeline() as p:
        p | beam.Create([batch]) | TrainGenerators([task], ComputeSettings("cpu", 1))
    assert not (tmp_path / "sngan-faces.resume.json").exists()  # resumed, finished, cleared
    whole = generators.train("sngan", images, tmp_path / "whole", steps=4, batch_size=4, seed=5,
                             n_dis=1, options={"ch": 8})
    assert (tmp_path / "sngan-faces.safetensors").read_bytes() == whole.read_bytes()
