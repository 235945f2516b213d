"""The generator EMA: its decay schedule, its update, and that it is what training saves and shows."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import generators
from generators.training import GeneratorTraining
from benchmark.images import encode_png, image_grid
from generators import stylegan2
from generators.base import GeneratorError, isolated_rng, render
from generators.ema import EmaSetting, GeneratorEma
from generators.training import GRID_COLUMNS, GRID_SEEDS, fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos


# --- the schedule ------------------------------------------------------------------------------

def test_half_life_in_images_with_nvidia_rampup_by_hand():
    ema = EmaSetting(kimg=10, rampup=0.05)
    # Update 1: nothing seen before it, so the copy becomes the generator.
    assert ema.decay(1, 16) == 0.0
    # Update 2: 16 images seen, half-life min(10000, 0.05 * 16) = 0.8 images.
    assert ema.decay(2, 16) == pytest.approx(0.5 ** (16 / 0.8), rel=1e-12)
    # Update 101: 1600 seen, half-life 80 images.
    assert ema.decay(101, 16) == pytest.approx(0.5 ** (16 / 80), rel=1e-12)
    # From 200k images on the published half-life holds: 10000 images.
    assert ema.decay(20001, 16) == pytest.approx(0.5 ** (16 / 10000), rel=1e-12)
    # Without ramp-up the half-life holds from the first update, for any batch size.
    assert EmaSetting(kimg=10).decay(1, 64) == pytest.approx(0.5 ** (64 / 10000), rel=1e-12)


def test_reference_batch_scales_the_half_life_as_stylegan3_does():
    # ema_kimg = batch * 10 / 32: at batch 16 a half-life of 5000 images, so 0.5 ** (16 / 5000).
    assert EmaSetting(kimg=10, reference_batch=32).decay(1, 16) == pytest.approx(0.5 ** (16 / 5000), rel=1e-12)
    assert generators.family("stylegan3").EMA.decay(10**6, 16) == pytest.approx(0.5 ** (16 / 5000), rel=1e-12)


def test_fixed_beta_with_rampup_and_with_tf_warmup_by_hand():
    progan = EmaSetting(beta=0.999, rampup=0.05)
    assert progan.decay(1, 16) == 0.0
    assert progan.decay(101, 16) == pytest.approx(0.5 ** (16 / (1600 * 0.05)), rel=1e-12)
    assert progan.decay(20001, 16) == 0.999  # ramp-up over: the published value exactly
    ddpm = EmaSetting(beta=0.9999, warmup=True)
    assert ddpm.decay(1, 16) == 2 / 11
    assert ddpm.decay(5, 16) == 6 / 15
    assert ddpm.decay(10**6, 16) == 0.9999


def test_each_family_has_its_published_setting():
    published = {
        "progan": EmaSetting(beta=0.999, rampup=0.05),
        "stylegan": EmaSetting(kimg=10.0, rampup=0.05),
        "stylegan2": EmaSetting(kimg=10.0, rampup=0.05),
        "stylegan3": EmaSetting(kimg=10.0, reference_batch=32, rampup=0.05),
    }
    found = {arch: getattr(generators.family(arch), "EMA", None)
             for arch in ("progan", "stylegan", "stylegan2", "stylegan3", "sngan", "mmdgan", "cramergan")}
    assert found == {**published, "sngan": None, "mmdgan": None, "cramergan": None}


@pytest.mark.parametrize("kwargs, key", [
    ({}, "exactly one of kimg and beta"),
    ({"kimg": 10, "beta": 0.9}, "exactly one of kimg and beta"),
    ({"kimg": 0}, "EMA kimg must"),
    ({"kimg": math.inf}, "EMA kimg must"),
    ({"beta": 1.0}, "EMA beta must"),
    ({"beta": True}, "EMA beta must"),
    ({"beta": 0.9, "reference_batch": 32}, "reference_batch scales kimg"),
    ({"kimg": 10, "reference_batch": 0}, "EMA reference_batch must"),
    ({"kimg": 10, "rampup": 0}, "EMA rampup must"),
    ({"kimg": 10, "warmup": 1}, "EMA warmup must"),
])
def test_bad_settings_are_clear_errors(kwargs, key):
    with pytest.raises(GeneratorError, match=key):
        EmaSetting(**kwargs)


def test_step_must_be_a_positive_count():
    with pytest.raises(GeneratorError, match="EMA step"):
        EmaSetting(kimg=10).decay(0, 16)


# --- the update ----------------------------------------------------------------------------------

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([1.0, -2.0]))
        self.register_buffer("count", torch.tensor(3))
        self.register_buffer("avg", torch.tensor([0.25]))


def test_update_averages_parameters_and_copies_buffers():
    net = Tiny()
    ema = GeneratorEma(net, EmaSetting(beta=0.75))
    assert not ema.module.training and not ema.module.weight.requires_grad
    with torch.no_grad():
        net.weight.copy_(torch.tensor([5.0, 2.0]))
        net.count.fill_(7)
        net.avg.fill_(-1.0)
    assert ema.update(net, 1, 4) == 0.75
    assert torch.equal(ema.module.weight, torch.tensor([0.75 * 1 + 0.25 * 5, 0.75 * -2 + 0.25 * 2]))
    # Buffers are the generator's state (w_avg, ProGAN's level), copied, not averaged.
    assert int(ema.module.count) == 7 and float(ema.module.avg) == -1.0
    assert torch.equal(net.weight, torch.tensor([5.0, 2.0]))  # the generator is left alone


def test_first_rampup_update_makes_the_copy_the_generator_exactly():
    net = Tiny()
    ema = GeneratorEma(net, EmaSetting(kimg=10, rampup=0.05))
    with torch.no_grad():
        net.weight.copy_(torch.tensor([0.1, 1 / 3]))
    ema.update(net, 1, 16)
    assert torch.equal(ema.module.weight, net.weight)


# --- training ------------------------------------------------------------------------------------

TINY = TINY_OPTIONS["stylegan2"]
# Slow enough that three tiny steps leave the average visibly apart from the generator.
SLOW = EmaSetting(beta=0.5)


def _fit(steps):
    return fit(stylegan2, random_photos(8), resolve_config(stylegan2, steps=steps, batch_size=4, seed=0),
               stylegan2.parse_options(TINY))


def _grid(net):
    return encode_png(image_grid(render(net, GRID_SEEDS, "cpu"), GRID_COLUMNS))


def test_checkpoint_and_grids_are_the_ema_not_the_trained_generator(monkeypatch, tmp_path):
    monkeypatch.setattr(stylegan2, "EMA", SLOW)
    path = generators.train("stylegan2", random_photos(8), tmp_path / "g",
                            GeneratorTraining(steps=2, batch_size=4, seed=0),
                            options=TINY, grid_every=1)
    with isolated_rng(0):
        init = stylegan2.build_generator(32, stylegan2.parse_options(TINY)).state_dict()
    # stylegan2 has no schedule, so a 1-step run is the first step of a 2-step one.
    one, two = _fit(1), _fit(2)
    g1, g2 = one.raw_generator.state_dict(), two.raw_generator.state_dict()
    saved = load_file(path)
    params = {name for name, _ in two.raw_generator.named_parameters()}
    for key in params:
        torch.testing.assert_close(saved[key], 0.25 * init[key] + 0.25 * g1[key] + 0.5 * g2[key])
    assert any(not torch.allclose(saved[k], g2[k]) for k in params)
    # Buffers: the generator's own, e.g. its tracked mean w, not an average of it.
    assert set(saved) - params and all(torch.equal(saved[k], g2[k]) for k in set(saved) - params)
    assert not torch.equal(init["mapping.w_avg"], g2["mapping.w_avg"])
    # The sidecar records the setting used.
    train = json.loads(path.with_suffix(".json").read_text())["train"]
    assert train["ema"] == dataclasses.asdict(SLOW)
    # The progress grid of step 1 and the final grid show the EMA, as NVIDIA's snapshots do.
    step_grid = (tmp_path / "g.grid.000001.png").read_bytes()
    assert step_grid == _grid(one.generator) and step_grid != _grid(one.raw_generator)
    assert (tmp_path / "g.grid.png").read_bytes() == _grid(two.generator)


def test_families_without_ema_record_none(tmp_path):
    path = generators.train("sngan", random_photos(8), tmp_path / "g",
                            GeneratorTraining(steps=1, batch_size=4, seed=0, n_dis=1),
                            options=TINY_OPTIONS["sngan"])
    assert json.loads(path.with_suffix(".json").read_text())["train"]["ema"] is None
