"""eval.device_corruption: the per-pixel and convolutional online corruptions as batched torch ops,
against the CPU engine; the loader's `corruption_device: device` records and the training hook."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from benchmark.corruptions import corrupt as cpu_corrupt
from benchmark.corruptions.fidelity import synthetic_photos
from eval import data, device_corruption, train
from eval.data import DataSettings, normalise, train_loader
from eval.device_corruption import NAMES, NONE, apply_recorded, corrupt, record
from tests.eval.test_data import FAST, build_folder

EXACT = ("brightness", "contrast", "saturate", "defocus_blur")
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
SEEDS = [101, 202]


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Photo-like, with flat blocks: where the defocus disk's sum of 1 - 4e-9 shows (a flat area
    truncates a level down in float64, not in float32)."""
    x = synthetic_photos(2, 128, seed=5)
    x[:, :40, :40] = 77
    x[:, 70:110, 60:120] = (200, 31, 140)
    return x


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return synthetic_photos(2, 48, seed=6)


def _levels(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).permute(0, 3, 1, 2).float()


def _device(x: np.ndarray, name: str, severity: int, seeds=SEEDS) -> np.ndarray:
    out = corrupt(_levels(x), [name] * len(x), [severity] * len(x), seeds)
    return out.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_and_whole_levels(small, name):
    a, b = _device(small, name, 3), _device(small, name, 3)
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 255 and np.array_equal(a, np.floor(a))
    other = _device(small, name, 3, seeds=[303, 404])
    assert np.array_equal(a, other) == (name not in NOISES)  # only the noises draw


@pytest.mark.parametrize("name", NAMES)
def test_severity_monotone(small, name):
    change = [float(np.abs(_device(small, name, s) - small).mean()) for s in range(1, 6)]
    # saturate's table desaturates (0.3, 0.1), then saturates (x2, x5, x20): monotone per arm
    arms = [change[:2], change[2:]] if name == "saturate" else [change]
    for arm in arms:
        assert all(a < b for a, b in zip(arm, arm[1:])), change


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_deterministic_ones_equal_the_cpu_engine(photos, name, severity):
    expected = cpu_corrupt(photos, name, severity, SEEDS)
    assert np.array_equal(_device(photos, name, severity), expected.astype(np.float32))


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_blur_equals_the_cpu_engine_to_a_level_on_rare_values(photos, severity):
    # both blur in float32, summing in another order: a value a hair from a whole level
    # truncates either way
    diff = np.abs(_device(photos, "gaussian_blur", severity)
                  - cpu_corrupt(photos, "gaussian_blur", severity, SEEDS))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001


@pytest.mark.parametrize("name", NOISES)
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_noises_match_the_cpu_engine_in_distribution(photos, name, severity):
    """Mean and variance of (corrupted - clean): the same within 1 level and 4% (98k values);
    a neighbouring severity is further off than that."""
    clean = photos.astype(np.float64)
    cpu = cpu_corrupt(photos, name, severity, SEEDS).astype(np.float64) - clean
    dev = _device(photos, name, severity).astype(np.float64) - clean
    assert abs(dev.mean() - cpu.mean()) <= 1.0
    assert dev.var() == pytest.approx(cpu.var(), rel=0.04)
    neighbour = severity + 1 if severity < 5 else severity - 1
    other = cpu_corrupt(photos, name, neighbour, SEEDS).astype(np.float64) - clean
    assert other.var() != pytest.approx(cpu.var(), rel=0.04)


def test_a_batch_equals_each_image_alone():
    x = synthetic_photos(6, 48, seed=9)
    names = ["gaussian_noise", "brightness", None, "shot_noise", "gaussian_noise", "defocus_blur"]
    severities = [2, 4, 0, 5, 2, 1]
    seeds = [11, 12, 13, 14, 15, 16]
    batch = corrupt(_levels(x), names, severities, seeds)
    for i in range(6):
        alone = corrupt(_levels(x[i:i + 1]), names[i:i + 1], severities[i:i + 1], seeds[i:i + 1])
        assert torch.equal(batch[i:i + 1], alone), i
    assert torch.equal(batch[2], _levels(x[2:3])[0])  # None: left as it was
    # two images with the same corruption and severity but their own seeds differ
    assert not torch.equal(batch[0], corrupt(_levels(x[:1]), names[:1], [2], [15])[0])


def test_bad_input_is_refused():
    x = _levels(synthetic_photos(1, 32))
    with pytest.raises(ValueError, match="not a device corruption"):
        corrupt(x, ["fog"], [1], [0])
    with pytest.raises(ValueError, match="severity must be 1..5"):
        corrupt(x, ["brightness"], [6], [0])
    with pytest.raises(ValueError, match="1 images but 2 names"):
        corrupt(x, ["brightness", None], [1, 1], [0, 0])
    with pytest.raises(ValueError, match="float"):
        corrupt(x.to(torch.uint8), ["brightness"], [1], [0])


def test_apply_recorded_undoes_and_redoes_the_loaders_normalisation(photos):
    images = torch.stack([normalise(p) for p in photos])[None]  # (1, 2, 3, H, W)
    rec = torch.tensor([[record("brightness", 4, 7), record("none", 0, 0)]])
    out = apply_recorded(images, rec)
    expected = normalise(cpu_corrupt(photos[:1], "brightness", 4, [7])[0])
    assert torch.equal(out[0, 0], expected)  # the float arithmetic of eval.data.normalise
    assert torch.equal(out[0, 1], images[0, 1])
    assert apply_recorded(images, None) is images
    assert torch.equal(apply_recorded(images, torch.full((1, 2, 3), NONE)), images)
    with pytest.raises(ValueError, match="do not match"):
        apply_recorded(images, torch.zeros(2, 3, dtype=torch.long))
    assert record("fog", 3, 5) == [NONE, 0, 0]
    assert record("contrast", 3, 2**40 + 5) == [NAMES.index("contrast"), 3, 5]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_folder(tmp_path_factory.mktemp("bench"), {"train": 3, "val": 1, "test": 1},
                        {"train": 2, "val": 1, "test": 1})


def test_loader_defers_device_corruptions_and_the_step_applies_them(folder):
    cpu = replace(FAST, online_corruption=True, corruption_probability=1.0)
    dev = replace(cpu, corruption_device="device")
    loader_batches = list(train_loader(folder, cpu, input_kind="resized", epoch=1))
    device_batches = list(train_loader(folder, dev, input_kind="resized", epoch=1))
    assert all("device_corruption" not in b for b in loader_batches)
    deferred = {n: 0 for n in NAMES}
    for a, b in zip(loader_batches, device_batches):
        assert a["key"] == b["key"] and torch.equal(a["mix"], b["mix"])
        rec = b["device_corruption"]
        assert rec.shape == (*b["image"].shape[:2], 3) and rec.dtype == torch.long
        applied = apply_recorded(b["image"], rec)
        for i, k in np.ndindex(*rec.shape[:2]):
            index = int(rec[i, k, 0])
            if index == NONE:  # done in the loader, as before
                assert torch.equal(a["image"][i, k], b["image"][i, k])
                continue
            name = NAMES[index]
            deferred[name] += 1
            assert not torch.equal(applied[i, k], b["image"][i, k])
            if name in EXACT:
                assert torch.equal(applied[i, k], a["image"][i, k]), name
    assert sum(deferred.values()) > 0


def test_device_corruption_needs_a_route_at_the_images_size():
    choice = data.CorruptionChoice("brightness", 2, 9)
    settings = replace(FAST, corruption_device="device")
    assert data._on_device(choice, settings, "stored", (32, 32))
    assert data._on_device(choice, settings, "resized_224", (224, 224))
    assert not data._on_device(choice, settings, "resized_224", (32, 32))  # the loader resizes
    assert not data._on_device(data.CorruptionChoice("fog", 2, 9), settings, "stored", (32, 32))
    assert not data._on_device(choice, FAST, "stored", (32, 32))
    with pytest.raises(ValueError, match="corruption_device"):
        DataSettings(corruption_device="gpu")


def test_training_step_applies_the_recorded_corruptions():
    seen = []

    def model(images):
        seen.append(images)
        return images

    levels = torch.arange(4 * 12, dtype=torch.float32).reshape(4, 1, 3, 2, 2) * 5
    images = levels.div(255.0).sub(0.5).div(0.5)
    rec = torch.tensor([[record("brightness", 5, 0)]] * 4)
    batch = {"image": images, "label": torch.zeros(4, 1, dtype=torch.long),
             "mix": torch.ones(4, 1), "device_corruption": rec}
    rt = train.Runtime(torch.device("cpu"), None, False)
    train._forward(model, batch, rt, mixing=False)
    assert torch.equal(seen[0], apply_recorded(images, rec)[:, 0])
    assert not torch.equal(seen[0], images[:, 0])
    del batch["device_corruption"]
    train._forward(model, batch, rt, mixing=False)
    assert torch.equal(seen[1], images[:, 0])


def test_config_setting_reaches_the_loader_settings():
    from benchmark.config import ConfigError
    from eval.train_config import load_train_config

    cfg = load_train_config("repmix", None, ["data.corruption_device=device"])
    assert train.data_settings(cfg, 2).corruption_device == "device"
    assert train.data_settings(load_train_config("repmix", None, []), 2).corruption_device == \
        "loader"
    with pytest.raises(ConfigError, match="corruption_device"):
        load_train_config("repmix", None, ["data.corruption_device=gpu"])
    assert device_corruption.NAMES == NAMES


def test_fft_correlation_keeps_whole_levels_whole():
    """An identity kernel through the float64 FFT lands a third of the values ~1e-13 below their
    level; the slack lifts them back, so truncation gives the level (the direct sum would)."""
    import torch.nn.functional as F

    x = _levels(synthetic_photos(2, 40, seed=1)).double()
    kernel = torch.zeros(5, 5, dtype=torch.float64)
    kernel[2, 2] = 1.0
    y = device_corruption._fft_correlate(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)
    assert torch.equal(torch.floor(y + device_corruption.FFT_SLACK), x)
    assert device_corruption.FFT_SLACK < 4e-9  # below the disk's own hair (1 - 4e-9)


def test_corruptions_run_outside_autocast(monkeypatch):
    """The training step calls the hook under autocast: the formulas must keep their own
    precision (a bf16 blur is levels off), so corrupt() switches autocast off around them."""
    seen = []

    def spy(x, severity, generators):
        seen.append(torch.is_autocast_enabled("cpu"))
        return x

    monkeypatch.setitem(device_corruption.CORRUPTIONS, "brightness", spy)
    x = _levels(synthetic_photos(1, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        corrupt(x, ["brightness"], [1], [0])
    assert seen == [False]
