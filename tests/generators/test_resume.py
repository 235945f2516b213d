"""A training run that crashes and is rerun ends with the same weights as one that never stopped."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

import generators
from benchmark.protocol import FOLDER_ONLY_ARCHS
from generators.training import GeneratorTraining
from tests.generators.tiny import TINY_OPTIONS, random_photos

# Architectures we train (the others read a folder made elsewhere).
NETWORK_ARCHS = tuple(a for a in generators.ARCHITECTURES if a not in FOLDER_ONLY_ARCHS)


class Crash(Exception):
    pass


def _train(arch, out, **kwargs):
    return generators.train(arch, random_photos(8), out,
                            GeneratorTraining(steps=5, batch_size=4, seed=0, n_dis=1),
                            TINY_OPTIONS[arch], **kwargs)


def _crash_at(step):
    def progress(stats):
        if stats.step == step:
            raise Crash
    return progress


@pytest.mark.parametrize("arch", NETWORK_ARCHS)
def test_resumed_run_equals_uninterrupted_run(arch, tmp_path):
    whole = _train(arch, tmp_path / "whole")
    with pytest.raises(Crash):
        _train(arch, tmp_path / "crashed", checkpoint_every=2, progress=_crash_at(3))
    snapshot = json.loads((tmp_path / "crashed.resume.json").read_text())
    assert snapshot["step"] == 2
    # A family with a generator EMA snapshots the EMA copy too, tensor for tensor.
    tensors = load_file(tmp_path / "crashed.resume.safetensors")
    g_keys = {k.removeprefix("module.generator.") for k in tensors if k.startswith("module.generator.")}
    ema_keys = {k.removeprefix("module.generator_ema.") for k in tensors if k.startswith("module.generator_ema.")}
    assert ema_keys == (g_keys if getattr(generators.family(arch), "EMA", None) else set())
    resumed = _train(arch, tmp_path / "crashed", checkpoint_every=2)
    assert resumed.read_bytes() == whole.read_bytes()
    assert not (tmp_path / "crashed.resume.json").exists()
    assert not (tmp_path / "crashed.resume.safetensors").exists()


def test_a_snapshot_of_other_settings_or_a_torn_one_is_ignored(tmp_path, caplog):
    whole = _train("sngan", tmp_path / "whole")
    with pytest.raises(Crash):
        generators.train("sngan", random_photos(8), tmp_path / "run",
                         GeneratorTraining(steps=5, batch_size=4, seed=1, n_dis=1),
                         TINY_OPTIONS["sngan"], checkpoint_every=2, progress=_crash_at(3))
    assert _train("sngan", tmp_path / "run", checkpoint_every=2).read_bytes() == whole.read_bytes()
    assert "belongs to another run" in caplog.text
    # A tensors file that does not match its JSON (a crash between the two writes) is not used.
    with pytest.raises(Crash):
        _train("sngan", tmp_path / "torn", checkpoint_every=2, progress=_crash_at(3))
    (tmp_path / "torn.resume.safetensors").write_bytes(b"not what the json describes")
    assert _train("sngan", tmp_path / "torn", checkpoint_every=2).read_bytes() == whole.read_bytes()
    assert "does not match" in caplog.text


def test_checkpoint_every_must_be_a_count(tmp_path):
    with pytest.raises(generators.GeneratorError, match="checkpoint_every"):
        _train("sngan", tmp_path / "x", checkpoint_every=-1)
