"""A checkpoint the build trained is reused only when settings and data are the same."""

import dataclasses

import numpy as np

import generators
from benchmark.records import TrainTask
from pipelines.train_generators import _reusable


def test_reuse_needs_same_settings_and_data(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    task = TrainTask(source="sngan", semantic="faces", arch="sngan",
                     checkpoint=str(tmp_path / "sngan-faces.safetensors"), steps=1, batch_size=4,
                     lr_g=2e-4, lr_d=2e-4, n_dis=1, samples=8, options={"ch": 8}, seed=5)
    sha = generators.images_sha256(images)
    assert not _reusable(task, sha)  # nothing trained yet
    generators.train("sngan", images, tmp_path / "sngan-faces", steps=1, batch_size=4, seed=5,
                     n_dis=1, options={"ch": 8})
    assert _reusable(task, sha)
    assert not _reusable(task, generators.images_sha256(images[:4]))
    for change in ({"steps": 2}, {"seed": 6}, {"n_dis": 2}, {"lr_g": 1e-3}, {"options": {"ch": 16}}):
        assert not _reusable(dataclasses.replace(task, **change), sha), change
    (tmp_path / "sngan-faces.json").write_text("{not json")
    assert not _reusable(task, sha)
