"""Checkpoint files: round trip through train/load, determinism, and every way loading can fail."""

import hashlib
import json
import re
import pickle
import shutil

import cv2
import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import generators
from generators.training import GeneratorTraining
from generators import sngan
from generators.base import GeneratorError, NetworkGenerator
from benchmark.atomic import sha256_file
from generators.checkpoint import checkpoint_paths, save_checkpoint
from generators.training import fit, resolve_config

TRAIN = dict(steps=3, batch_size=8, seed=7, n_dis=1)
OPTIONS = {"ch": 8, "dim_z": 32}
SEEDS = [0, 3, 11]


@pytest.fixture(scope="module")
def photos():
    return np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, photos):
    """A checkpoint written by generators.train (3 steps, 32 px, ch=8, 16 random images)."""
    out = tmp_path_factory.mktemp("ckpt") / "sngan_tiny"
    return generators.train("sngan", photos, out, GeneratorTraining(**TRAIN), options=OPTIONS)


@pytest.fixture()
def copy(trained, tmp_path):
    """A private copy of the trained checkpoint that a test may damage; returns its stem."""
    for path in (trained, trained.with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / trained.stem


def test_train_writes_checkpoint_sidecar_and_grid(trained, photos):
    paths = checkpoint_paths(trained)
    assert trained == paths.weights and trained.suffix == ".safetensors"
    meta = json.loads(paths.sidecar.read_text())
    assert meta["format"] == "attribution88-generator/1"
    assert meta["arch"] == "sngan" and meta["resolution"] == 32
    assert meta["options"] == OPTIONS
    assert meta["sha256"] == sha256_file(trained)
    assert meta["train"]["data_sha256"] == hashlib.sha256(photos.tobytes()).hexdigest()
    assert meta["train"]["image_count"] == 16
    assert {k: meta["train"][k] for k in TRAIN} == TRAIN
    grid = cv2.imread(str(paths.grid))
    assert grid.shape == (8 * 32, 8 * 32, 3)
    # Only the generator is stored, and no temporary files are left behind.
    assert not any(k.startswith("discriminator") or "parametrizations" in k for k in load_file(trained))
    assert sorted(p.name for p in trained.parent.iterdir()) == sorted(
        [paths.weights.name, paths.sidecar.name, paths.grid.name])


def test_round_trip_matches_in_memory_model(trained, photos, tmp_path):
    # fit() with the same settings is what train() ran, so the weights must be the same.
    result = fit(sngan, photos, resolve_config(sngan, **TRAIN), sngan.parse_options(OPTIONS))
    in_memory = NetworkGenerator("sngan", result.generator, 32, "").sample(SEEDS)
    loaded = generators.load("sngan", checkpoint=trained, resolution=32)
    assert loaded.arch == "sngan" and loaded.resolution == 32
    assert loaded.checkpoint_sha256 == sha256_file(trained)
    assert np.array_equal(loaded.sample(SEEDS), in_memory)
    # save_checkpoint of the in-memory model gives byte-identical weights.
    resaved = save_checkpoint(tmp_path / "again", result.generator, arch="sngan", resolution=32,
                              options=OPTIONS, train=None)
    assert sha256_file(resaved.weights) == sha256_file(trained)


def test_two_loads_and_all_path_spellings_agree(trained):
    stem = trained.with_suffix("")
    a = generators.load("sngan", checkpoint=trained, resolution=32).sample(SEEDS)
    b = generators.load("sngan", checkpoint=stem, resolution=32).sample(SEEDS)
    c = generators.load("sngan", checkpoint=trained.with_suffix(".json"), resolution=32).sample(SEEDS)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert isinstance(generators.load("sngan", checkpoint=stem, resolution=32), generators.Generator)


def test_missing_files(copy):
    copy.with_suffix(".json").unlink()
    with pytest.raises(GeneratorError, match="does not exist") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(copy.with_suffix(".json")) in str(e.value)
    with pytest.raises(GeneratorError, match="does not exist") as e:
        generators.load("sngan", checkpoint=copy.parent / "nothing", resolution=32)
    assert str(copy.parent / "nothing.safetensors") in str(e.value)


def test_corrupt_weights(copy):
    weights = copy.with_suffix(".safetensors")
    weights.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(GeneratorError, match="does not match its sidecar") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(weights) in str(e.value)
    # Even with a sidecar that vouches for the damaged file, it is refused cleanly.
    sidecar = copy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = sha256_file(weights)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match="not a readable safetensors") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(weights) in str(e.value)


def test_pickle_is_never_loaded(copy, tmp_path):
    weights = copy.with_suffix(".safetensors")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    weights.write_bytes(pickle.dumps(Evil()))
    sidecar = copy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = sha256_file(weights)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError):
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert not marker.exists()


def edit_sidecar(stem, **changes):
    sidecar = stem.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta.update(changes)
    sidecar.write_text(json.dumps(meta))
    return sidecar


def test_sidecar_arch_mismatch(copy):
    sidecar = edit_sidecar(copy, arch="progan")
    with pytest.raises(GeneratorError, match="'progan', not 'sngan'") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(sidecar) in str(e.value)


def test_sidecar_format_and_json_errors(copy):
    sidecar = edit_sidecar(copy, format="something/2")
    with pytest.raises(GeneratorError, match="format") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(sidecar) in str(e.value)
    sidecar.write_text("{not json")
    with pytest.raises(GeneratorError, match="JSON") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(sidecar) in str(e.value)


def test_shape_mismatch(copy):
    edit_sidecar(copy, options={"ch": 16, "dim_z": 32})
    with pytest.raises(GeneratorError, match="shape mismatches") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(copy.with_suffix(".safetensors")) in str(e.value)


def test_key_mismatch(copy):
    weights = copy.with_suffix(".safetensors")
    state = load_file(weights)
    state["extra.weight"] = state.pop("to_rgb.weight")
    save_file(state, weights)
    edit_sidecar(copy, sha256=sha256_file(weights))
    pattern = "missing keys.*to_rgb.weight.*unexpected keys.*extra.weight"
    with pytest.raises(GeneratorError, match=pattern) as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(weights) in str(e.value)


def test_resolution_mismatch_and_bad_options(copy):
    with pytest.raises(GeneratorError, match="resolution 32") as e:
        generators.load("sngan", checkpoint=copy, resolution=128)
    assert str(copy.with_suffix(".json")) in str(e.value)
    edit_sidecar(copy, options={"ch": 8, "depth": 3})
    with pytest.raises(GeneratorError, match="unknown sngan options"):
        generators.load("sngan", checkpoint=copy, resolution=32)


def test_load_argument_errors(trained, tmp_path):
    with pytest.raises(GeneratorError, match="needs checkpoint"):
        generators.load("sngan", resolution=32)
    with pytest.raises(GeneratorError, match="needs checkpoint"):
        generators.load("sngan", checkpoint=trained, folder=tmp_path, resolution=32)


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_nan_or_inf_weights_are_refused_by_key(copy):
    from safetensors.torch import load_file, save_file

    weights = copy.with_suffix(".safetensors")
    state = load_file(str(weights))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    save_file(state, str(weights))
    sidecar = copy.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = sha256_file(weights)
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(GeneratorError, match=f"NaN or infinite values in: \\['{re.escape(name)}'\\]") as e:
        generators.load("sngan", checkpoint=copy, resolution=32)
    assert str(weights) in str(e.value)
