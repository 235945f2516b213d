"""SNGAN networks, seed -> image determinism, training steps and the training CLI."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import generators
from generators.training import GeneratorTraining
from generators import sngan
from generators.base import (SAMPLE_BATCH, GeneratorError, NetworkGenerator, isolated_rng,
                             seed_latents, to_uint8)
from generators.training import fit, resolve_config

REPO = Path(__file__).resolve().parents[2]
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def tiny_generator(resolution: int, ch: int = 8) -> NetworkGenerator:
    with isolated_rng(0):
        net = sngan.build_generator(resolution, sngan.SNGANOptions(ch=ch))
    return NetworkGenerator("sngan", net, resolution, "")


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_network_shapes(resolution):
    opts = sngan.SNGANOptions(ch=4, dim_z=16)
    with isolated_rng(0):
        g = sngan.build_generator(resolution, opts)
        d = sngan.build_discriminator(resolution, opts)
    x = g(torch.randn(2, 16))
    assert x.shape == (2, 3, resolution, resolution)
    assert x.abs().max() <= 1
    assert d(x).shape == (2,)
    # log2(resolution / 4) up-blocks, as in the paper.
    assert len(g.blocks) == int(np.log2(resolution // 4))


def test_generator_rejects_wrong_latent_shape():
    g = tiny_generator(32).net
    with pytest.raises(AssertionError):
        g(torch.randn(2, 7))


def test_unsupported_resolution_and_options():
    with pytest.raises(GeneratorError, match="resolutions"):
        sngan.build_generator(48, sngan.SNGANOptions(ch=4))
    with pytest.raises(GeneratorError, match="unknown sngan options"):
        sngan.parse_options({"ch": 4, "width": 3})
    with pytest.raises(GeneratorError, match="positive integer"):
        sngan.parse_options({"ch": 0})
    assert sngan.parse_options(None) == sngan.SNGANOptions(ch=64, dim_z=128)


@pytest.mark.parametrize("resolution", [32, 128])
def test_sample_shape_dtype_range(resolution):
    images = tiny_generator(resolution).sample([0, 1, 2])
    assert images.shape == (3, resolution, resolution, 3)
    assert images.dtype == np.uint8
    assert images.std() > 0  # not a constant image
    assert tiny_generator(resolution).sample([]).shape == (0, resolution, resolution, 3)


def test_sample_independent_of_batch_composition():
    gen = tiny_generator(32)
    many = gen.sample([1, 3, 5, 7])
    assert np.array_equal(gen.sample([3, 7]), many[[1, 3]])
    # At 128 px, running the network on batches of different sizes flips a few pixels on this
    # CPU (kernel choice depends on batch size); sample() must hide that.
    gen = tiny_generator(128, ch=4)
    together = gen.sample(range(8))
    assert np.array_equal(np.concatenate([gen.sample([s]) for s in range(8)]), together)
    gen = tiny_generator(32)
    # Across a SAMPLE_BATCH boundary and in reverse order, too.
    seeds = list(range(SAMPLE_BATCH + 5))
    forward = gen.sample(seeds)
    assert np.array_equal(gen.sample(seeds[::-1])[::-1], forward)
    assert np.array_equal(gen.sample([SAMPLE_BATCH + 2]), forward[[SAMPLE_BATCH + 2]])
    assert not np.array_equal(forward[0], forward[1])


def test_latents_are_per_seed_cpu_draws():
    z = seed_latents([5, 9], 128)
    assert torch.equal(z[0], torch.randn(128, generator=torch.Generator("cpu").manual_seed(5)))
    assert torch.equal(z[1], torch.randn(128, generator=torch.Generator("cpu").manual_seed(9)))
    for bad in ([-1], [2**63], [1.5], [True]):
        with pytest.raises(GeneratorError):
            seed_latents(bad, 8)


def test_to_uint8_mapping():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_training_steps_change_weights_and_leave_global_rng_alone():
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    with isolated_rng(1):
        before = sngan.build_generator(32, sngan.SNGANOptions(ch=8)).state_dict()
    rng_state = torch.get_rng_state()
    seen = []
    result = fit(sngan, images, resolve_config(sngan, steps=3, batch_size=8, seed=1, n_dis=2),
                 sngan.SNGANOptions(ch=8), on_step=lambda stats, gen: seen.append(stats))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert "linear.weight" in changed and "to_rgb.weight" in changed
    # The same seed starts from the same weights (the "before" copy above).
    with isolated_rng(1):
        again = sngan.build_generator(32, sngan.SNGANOptions(ch=8)).state_dict()
    assert all(torch.equal(before[k], again[k]) for k in before)


def test_train_config_validation():
    with pytest.raises(GeneratorError, match="n_dis"):
        resolve_config(sngan, steps=1, batch_size=2, seed=0, n_dis=0)
    with pytest.raises(GeneratorError, match="betas"):
        resolve_config(sngan, steps=1, batch_size=2, seed=0, betas=(0.0, 1.5))


def test_train_rejects_bad_images_and_arch(tmp_path):
    with pytest.raises(GeneratorError, match="uint8"):
        generators.train("sngan", np.zeros((4, 32, 32, 3), np.float32), tmp_path / "x",
                         GeneratorTraining(steps=1, batch_size=2, seed=0))
    with pytest.raises(GeneratorError, match="resolutions"):
        generators.train("sngan", np.zeros((4, 40, 40, 3), np.uint8), tmp_path / "x",
                         GeneratorTraining(steps=1, batch_size=2, seed=0))
    with pytest.raises(GeneratorError, match="cannot train"):
        generators.train("folder", np.zeros((4, 32, 32, 3), np.uint8), tmp_path / "x",
                         GeneratorTraining(steps=1, batch_size=2, seed=0))


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "generators.train", "--help"], cwd=REPO,
                         env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for flag in ("--arch", "--images", "--out", "--resolution", "--steps", "--batch-size", "--seed", "--ch",
                 "--option", "--checkpoint-every"):
        assert flag in out.stdout


def test_cli_trains_from_a_photo_folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        cv2.imwrite(str(photos / f"{i}.png"), rng.integers(0, 256, (40 + i, 36, 3), dtype=np.uint8))
    out = tmp_path / "ckpt" / "tiny"
    proc = subprocess.run([sys.executable, "-m", "generators.train", "--arch", "sngan",
                           "--images", str(photos), "--out", str(out), "--resolution", "32",
                           "--steps", "2", "--batch-size", "4", "--seed", "0", "--ch", "4", "--n-dis", "1"],
                          cwd=REPO, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) + ".safetensors"
    assert "train sngan" in proc.stderr and "2/2" in proc.stderr  # the progress bar
    gen = generators.load("sngan", checkpoint=out, resolution=32)
    assert gen.sample([0]).shape == (1, 32, 32, 3)
    # A bad folder is reported, not a traceback.
    proc = subprocess.run([sys.executable, "-m", "generators.train", "--images", str(tmp_path / "nope"),
                           "--out", str(out), "--steps", "1"], cwd=REPO, env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "nope" in proc.stderr


def test_package_function_train_is_not_shadowed():
    assert callable(generators.train) and generators.train.__module__ == "generators.training"
    # The -m entry point refuses an import, which would bind the module over the function.
    with pytest.raises(ImportError, match="generators.cli"):
        importlib.import_module("generators.train")
    assert callable(generators.train) and generators.train.__module__ == "generators.training"
    assert generators.family("sngan").NAME == "sngan"
    assert generators.family("folder").NAME == "folder"
    with pytest.raises(GeneratorError, match="unknown arch"):
        generators.load("stylegan9", checkpoint=Path("x"))


def test_registry_names_match_the_protocol():
    from benchmark.protocol import GENERATOR_ARCHS

    assert tuple(generators.ARCHITECTURES) == GENERATOR_ARCHS


def test_unset_optimiser_settings_take_the_family_defaults(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    path = generators.train("sngan", images, tmp_path / "g",
                            GeneratorTraining(steps=1, batch_size=4, seed=0, n_dis=1),
                            options={"ch": 4})
    train = json.loads(path.with_suffix(".json").read_text())["train"]
    assert (train["lr_g"], train["lr_d"], train["betas"], train["n_dis"]) == (2e-4, 2e-4, [0.0, 0.9], 1)
