"""A checkpoint the build trained is reused only when settings and data are the same."""

import dataclasses
import json

import numpy as np
import pytest

import generators
from benchmark.records import TrainTask
from generators.training import GeneratorTraining


def _reusable(task: TrainTask, data_sha256: str, resolution: int) -> bool:
    return generators.is_trained(task.checkpoint, task.arch, task.training, task.options,
                                 data_sha256=data_sha256, resolution=resolution)


def test_reuse_needs_same_settings_and_data(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    task = TrainTask(source="sngan", semantic="faces", arch="sngan",
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"),
                     training=GeneratorTraining(steps=1, batch_size=4, seed=5, lr_g=2e-4,
                                                lr_d=2e-4, n_dis=1),
                     samples=8, options={"ch": 8})
    sha = generators.images_sha256(images)
    assert not _reusable(task, sha, 32)  # nothing trained yet
    generators.train("sngan", images, tmp_path / "sngan-faces",
                     GeneratorTraining(steps=1, batch_size=4, seed=5, n_dis=1), {"ch": 8})
    assert _reusable(task, sha, 32)
    assert not _reusable(task, generators.images_sha256(images[:4]), 32)
    assert not _reusable(task, sha, 64)
    for change in ({"steps": 2}, {"seed": 6}, {"n_dis": 2}, {"lr_g": 1e-3}):
        changed = dataclasses.replace(task, training=dataclasses.replace(task.training, **change))
        assert not _reusable(changed, sha, 32), change
    for change in ({"options": {"ch": 16}}, {"options": {"ch": 8, "dim_z": 64}}):
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
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"),
                     training=GeneratorTraining(steps=4, batch_size=4, seed=5, n_dis=1),
                     samples=8, options={"ch": 8}, checkpoint_every=2)
    # What a crashed build leaves behind: a snapshot at step 2 of this very training.
    def crash(stats):
        if stats.step == 3:
            raise RuntimeError("worker lost")
    try:
        generators.train("sngan", images, tmp_path / "sngan-faces", task.training, {"ch": 8},
                         checkpoint_every=2, progress=crash)
    except RuntimeError:
        pass
    assert (tmp_path / "sngan-faces.resume.json").is_file()
    batch = ImageBatch(chunk_id="faces-0", source="real", semantic="faces", role="gan_train",
                       keys=tuple(f"k{i}" for i in range(8)), pngs=tuple(encode_png(img) for img in images),
                       ranks=tuple(range(8)), origins=("",) * 8, generator="photo", checkpoint_sha256="")
    with TestPipeline() as p:
        p | beam.Create([batch]) | TrainGenerators([task], ComputeSettings("cpu", 1))
    assert not (tmp_path / "sngan-faces.resume.json").exists()  # resumed, finished, cleared
    whole = generators.train("sngan", images, tmp_path / "whole", task.training, {"ch": 8})
    assert (tmp_path / "sngan-faces.safetensors").read_bytes() == whole.read_bytes()


# A sidecar exactly as the training code before GeneratorTraining wrote it (TRAINING_VERSION 2);
# only the torch version is filled in, since a checkpoint is reused under the same torch alone.
OLD_SIDECAR = """{
  "arch": "sngan",
  "format": "attribution88-generator/1",
  "options": {"ch": 8, "dim_z": 128},
  "resolution": 32,
  "sha256": "4842dbe114b9eb27c537b5e79f3f2208799cfdbdaa0179b7c412be59c0325686",
  "train": {"batch_size": 8, "betas": [0.0, 0.9], "data_sha256": "7a7f7b56f36bf6090fab2787071ab71e2e6c83b50bc920ac2e63bd436e3c0a1f",
            "ema": null, "image_count": 21, "lr_d": 0.0002, "lr_g": 0.0002, "n_dis": 5,
            "seed": 936217718801605719, "steps": 3, "torch": "TORCH", "training_version": 2}
}
"""


def test_a_checkpoint_trained_before_generator_training_is_still_reused(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "sngan-faces.safetensors"))
    (tmp_path / "sngan-faces.json").write_text(OLD_SIDECAR.replace("TORCH", torch.__version__))
    # The build's task for it: the config gave steps 3, batch 8 and ch 8, nothing else.
    task = TrainTask(source="sngan", semantic="faces", arch="sngan",
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"),
                     training=GeneratorTraining(steps=3, batch_size=8, seed=936217718801605719),
                     samples=8, options={"ch": 8})
    data = "7a7f7b56f36bf6090fab2787071ab71e2e6c83b50bc920ac2e63bd436e3c0a1f"
    assert _reusable(task, data, 32)
    assert not _reusable(dataclasses.replace(task, training=dataclasses.replace(
        task.training, steps=4)), data, 32)
