"""benchmarks/data_path.py: its measuring functions on a few tiny images, and the script's table."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from eval import data

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("data_path", ROOT / "benchmarks" / "data_path.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["data_path"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("data_path", None)


@pytest.fixture(scope="module")
def folder(bench, tmp_path_factory):
    return bench.build_shards(tmp_path_factory.mktemp("dp") / "bench", 24, side=40, shards=3)


SETTINGS = data.DataSettings(resize=48, crop=40, batch_size=4, workers=0, shuffle_buffer=4, seed=0)


def test_synthetic_shards_are_a_train_folder_the_loader_reads(bench, folder):
    assert folder.resolution == 40
    assert len(folder.shards("train")) == 3
    assert data.train_count(folder, SETTINGS) == 24
    images = bench.decoded_images(folder, 5)
    assert len(images) == 5 and images[0].shape == (40, 40, 3)


def test_loader_rate_counts_images_after_the_first_batch(bench, folder):
    rate = bench.loader_rate(folder, SETTINGS)
    assert rate.workers == 0 and rate.corruption and rate.images_per_s > 0
    assert rate.per_worker == rate.images_per_s
    two = bench.LoaderRate(2, True, 300.0)
    assert two.per_worker == 150.0
    with pytest.raises(ValueError, match="too few train images"):
        bench.loader_rate(folder, replace(SETTINGS, batch_size=64))  # one batch: nothing timed


def test_corruption_costs_and_their_expectation(bench, folder):
    crops = bench.augmented_crops(bench.decoded_images(folder, 2), SETTINGS)
    assert crops[0].shape == (40, 40, 3)
    costs = bench.corruption_costs(crops, ("contrast", "gaussian_noise"))
    assert set(costs) == {"contrast", "gaussian_noise"}
    assert all(set(by) == {1, 2, 3, 4, 5} and min(by.values()) > 0 for by in costs.values())
    # p times the mean over types of the mean over severities
    table = {"a": {s: 1.0 for s in range(1, 6)}, "b": {1: 2.0, 2: 2.0, 3: 2.0, 4: 4.0, 5: 5.0}}
    assert bench.expected_corruption_ms(table, 0.5) == pytest.approx(0.5 * (1.0 + 3.0) / 2)
    assert bench.workers_needed(2470.0, 247.0) == pytest.approx(10.0)


def test_reference_ratio_stage_costs_and_model_rate(bench, folder):
    images = bench.decoded_images(folder, 4)
    ours, theirs = bench.ours_vs_torchvision(images, SETTINGS, repeats=1)
    assert ours > 0 and theirs > 0
    stages = bench.stage_costs(folder, SETTINGS, 6, corruption_ms=0.5, repeats=1)
    assert list(stages) == ["read + decode PNG", "resize + flip + crop", "normalise (float32)",
                            "collate", "online corruption (expected)"]
    assert stages["online corruption (expected)"] == 0.5 and min(stages.values()) > 0
    assert bench.model_rate("resnet18", size=32, pairs=2, steps=1) > 0


def test_script_prints_every_section(bench, capsys):
    assert bench.main(["--images", "24", "--side", "40", "--workers", "0", "--batch", "4",
                       "--cost-images", "2", "--model-steps", "0", "--gpu-rate", "100"]) == 0
    out = capsys.readouterr().out
    for label in ("1. loader", "2. online corruption cost", "torchvision v2",
                  "5. one image's steps",
                  "6. verdict", "--gpu-rate, given", "workers per GPU vs 16 cores"):
        assert label in out, label
    assert "4. CPU" not in out  # --model-steps 0 skips the model
