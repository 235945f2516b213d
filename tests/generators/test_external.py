"""Foreign checkpoint formats: rosinality stylegan2-pytorch .pt files load; pickles are refused."""

import argparse
import json
import os
import pickle
import sys

import numpy as np
import pytest
import torch

import generators
from generators import external, stylegan2
from generators.base import GeneratorError, NetworkGenerator, isolated_rng, seed_latents

# 64 px with a narrower top layer (width 4 < ch 8), so the channel multiplier has to be inferred.
OPTIONS = {"ch": 8, "channel_multiplier": 1, "dim_z": 16, "n_mlp": 3}
SEEDS = [0, 1, 2, 40]


@pytest.fixture(scope="module")
def ours():
    with isolated_rng(3):
        net = stylegan2.build_generator(64, stylegan2.parse_options(OPTIONS))
    with torch.no_grad():
        # Non-trivial values everywhere the conversion could get wrong.
        for layer in net.layers:
            layer.noise.strength.normal_()
            layer.bias.normal_(std=0.1)
        for rgb in net.to_rgbs:
            rgb.bias.normal_(std=0.1)
        net.mapping.w_avg.normal_()
    return net.eval()


def save_rosinality(path, net, *, latent_avg=True, extra=None):
    """A file laid out like rosinality's train.py checkpoints (g, d, g_ema, optimisers, args)."""
    state = external.ours_to_rosinality(net.state_dict())
    state.update(extra or {})
    payload = {"g_ema": state, "g": state, "d": {"convs.0.0.weight": torch.zeros(2, 3, 1, 1)},
               "g_optim": {"state": {}, "param_groups": []}, "args": argparse.Namespace(size=64, n_mlp=3)}
    if latent_avg:
        payload["latent_avg"] = net.mapping.w_avg.clone()
    torch.save(payload, path)
    return path


def test_key_mapping_is_a_bijection(ours):
    theirs = external.ours_to_rosinality(ours.state_dict())
    assert {"style.1.weight", "style.3.bias", "input.input", "conv1.conv.modulation.weight",
            "conv1.activate.bias", "convs.0.conv.blur.kernel", "convs.1.noise.weight", "noises.noise_4",
            "to_rgb1.bias", "to_rgbs.0.upsample.kernel", "to_rgbs.3.conv.weight"} <= set(theirs)
    assert theirs["convs.0.conv.weight"].shape == (1, 8, 8, 3, 3)
    back = external.rosinality_to_ours(theirs)
    mine = ours.state_dict()
    assert set(back) == set(mine) - {"mapping.w_avg"}
    assert all(torch.equal(back[k], mine[k]) for k in back)


def test_rosinality_checkpoint_reproduces_our_images(tmp_path, ours):
    path = save_rosinality(tmp_path / "550000.pt", ours)
    gen = generators.load("stylegan2", checkpoint=path, resolution=64)
    assert gen.resolution == 64 and gen.checkpoint_sha256 == generators.sha256_file(path)
    assert (gen.net.dim_z, len(gen.net.mapping.layers)) == (16, 3)
    assert gen.net.to_rgbs[-1].conv.weight.shape[2] == 4  # channel_multiplier 1 was read off the shapes
    assert torch.equal(gen.net.mapping.w_avg, ours.mapping.w_avg)  # from latent_avg
    expected = NetworkGenerator("stylegan2", ours, 64, "").sample(SEEDS)
    assert np.array_equal(gen.sample(SEEDS), expected)
    assert expected.std() > 0


def test_bare_state_dict_without_latent_avg(tmp_path, ours):
    path = tmp_path / "g_ema.pth"
    torch.save(external.ours_to_rosinality(ours.state_dict()), path)
    gen = generators.load("stylegan2", checkpoint=path, resolution=64)
    with torch.no_grad():
        mean_w = ours.mapping(seed_latents(external.W_AVG_SEEDS, 16)).mean(0)
    assert torch.allclose(gen.net.mapping.w_avg, mean_w)
    assert np.array_equal(gen.sample(SEEDS), NetworkGenerator("stylegan2", ours, 64, "").sample(SEEDS))


def test_bad_rosinality_files_name_the_problem(tmp_path, ours):
    state = external.ours_to_rosinality(ours.state_dict())
    del state["convs.1.noise.weight"]
    state["convs.1.extra.weight"] = torch.zeros(1)
    state["to_rgb1.bias"] = torch.zeros(3)
    path = tmp_path / "broken.pt"
    torch.save({"g_ema": state}, path)
    with pytest.raises(GeneratorError, match=r"broken.pt.*missing keys: \['convs.1.noise.weight'\].*"
                                             r"unexpected keys: \['convs.1.extra.weight'\].*to_rgb1.bias"):
        generators.load("stylegan2", checkpoint=path, resolution=64)

    good = save_rosinality(tmp_path / "good.pt", ours)
    with pytest.raises(GeneratorError, match="is a 64 px generator, not the requested 32 px"):
        generators.load("stylegan2", checkpoint=good, resolution=32)
    with pytest.raises(GeneratorError, match="arch must be 'stylegan2', not 'stylegan'"):
        generators.load("stylegan", checkpoint=good, resolution=64)
    with pytest.raises(GeneratorError, match="does not exist"):
        generators.load("stylegan2", checkpoint=tmp_path / "absent.pt", resolution=64)
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(GeneratorError, match="neither a 'g_ema' entry.*'model'"):
        generators.load("stylegan2", checkpoint=tmp_path / "other.pt", resolution=64)
    with pytest.raises(GeneratorError, match="filter"):
        save_rosinality(tmp_path / "k.pt", ours, extra={"convs.0.conv.blur.kernel": torch.ones(4, 4)})
        generators.load("stylegan2", checkpoint=tmp_path / "k.pt", resolution=64)


class _Payload:
    """Unpickling this creates a file: proof that a loader ran code from the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pt_with_code_is_not_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Payload(marker)}, path)
    with pytest.raises(GeneratorError, match=r"weights_only=True"):
        generators.load("stylegan2", checkpoint=path, resolution=64)
    assert not marker.exists()


def test_nvidia_pickle_is_refused_without_the_trust_flag(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Payload(marker)}))
    with pytest.raises(GeneratorError, match=r"pickle.*trust_pickle=True.*dnnlib"):
        generators.load("stylegan2", checkpoint=path, resolution=64)
    # Trusting it is not enough without NVIDIA's code to rebuild the network.
    monkeypatch.setattr(external.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GeneratorError, match=r"not importable.*\['dnnlib', 'torch_utils'\]"):
        generators.load("stylegan2", checkpoint=path, resolution=64, trust_pickle=True)
    assert not marker.exists()


# Stands in for NVIDIA's code: importable dnnlib / torch_utils packages and a pickled G_ema with
# NVIDIA's state-dict names whose forward is NVIDIA's call signature. Its images come from the
# network the test converted from, so this checks the renaming, option inference and the
# image check, not NVIDIA's ops (the real code is not installed here).
FAKE_NVIDIA = """
import torch


class FakeG(torch.nn.Module):
    def __init__(self, state, net, offset, conv_clamp):
        super().__init__()
        self.nvidia_state, self.net, self.offset, self.c_dim = state, net, offset, 0
        self.synthesis = torch.nn.Module()
        self.synthesis.b4 = torch.nn.Module()
        self.synthesis.b4.conv1 = torch.nn.Module()
        self.synthesis.b4.conv1.conv_clamp = conv_clamp

    def state_dict(self, *args, **kwargs):
        return dict(self.nvidia_state)

    def forward(self, z, c, truncation_psi=1, noise_mode="random", force_fp32=False):
        assert noise_mode == "const" and truncation_psi == 1 and c.shape == (len(z), 0)
        ws = self.net.mapping(z).unsqueeze(1).repeat(1, self.net.num_ws, 1)
        return self.net.synthesis(ws) + self.offset
"""


@pytest.fixture
def fake_nvidia(tmp_path, monkeypatch):
    code = tmp_path / "nvidia_code"
    for package in ("dnnlib", "torch_utils"):
        (code / package).mkdir(parents=True)
        (code / package / "__init__.py").write_text("")
    (code / "fake_nvidia_net.py").write_text(FAKE_NVIDIA)
    monkeypatch.syspath_prepend(str(code))
    import fake_nvidia_net

    def write(name, net, *, offset=0.0, conv_clamp=None, state=None):
        state = external.ours_to_nvidia(net.state_dict()) if state is None else state
        path = tmp_path / name
        path.write_bytes(pickle.dumps({"G_ema": fake_nvidia_net.FakeG(state, net, offset, conv_clamp),
                                       "D": None}))
        return path

    yield write
    monkeypatch.delitem(sys.modules, "fake_nvidia_net")


def test_nvidia_names_and_shapes(ours):
    theirs = external.ours_to_nvidia(ours.state_dict())
    assert theirs["synthesis.b4.const"].shape == (8, 4, 4)
    assert theirs["synthesis.b8.conv0.weight"].shape == (8, 8, 3, 3)
    assert theirs["synthesis.b64.conv1.noise_const"].shape == (64, 64)
    assert theirs["synthesis.b64.conv1.noise_strength"].shape == ()
    assert theirs["synthesis.b64.torgb.weight"].shape == (3, 4, 1, 1)
    assert theirs["synthesis.b64.torgb.bias"].shape == (3,)
    assert {"mapping.fc2.weight", "mapping.w_avg", "synthesis.b4.resample_filter",
            "synthesis.b4.conv1.resample_filter", "synthesis.b16.conv0.resample_filter"} <= set(theirs)
    assert "synthesis.b4.conv0.weight" not in theirs


def test_trusted_nvidia_pickle_converts_and_is_checked(fake_nvidia, ours):
    path = fake_nvidia("network-snapshot-000100.pkl", ours)
    gen = generators.load("stylegan2", checkpoint=path, resolution=64, trust_pickle=True)
    assert np.array_equal(gen.sample(SEEDS), NetworkGenerator("stylegan2", ours, 64, "").sample(SEEDS))
    assert torch.equal(gen.net.mapping.w_avg, ours.mapping.w_avg)
    assert gen.checkpoint_sha256 == generators.sha256_file(path)
    with pytest.raises(GeneratorError, match="is a 64 px generator, not the requested 128 px"):
        generators.load("stylegan2", checkpoint=path, resolution=128, trust_pickle=True)
    # NVIDIA's conv_clamp travels into our options.
    clamped = fake_nvidia("clamped.pkl", ours, conv_clamp=256)
    assert generators.load("stylegan2", checkpoint=clamped, resolution=64, trust_pickle=True).net.layers[0].clamp == 256
    # A conversion that would change the images is refused, naming the difference.
    off = fake_nvidia("off.pkl", ours, offset=0.01)
    with pytest.raises(GeneratorError, match="does not reproduce NVIDIA's images"):
        generators.load("stylegan2", checkpoint=off, resolution=64, trust_pickle=True)
    state = external.ours_to_nvidia(ours.state_dict())
    state["synthesis.b8.skip.weight"] = torch.zeros(8, 8, 1, 1)  # NVIDIA's "resnet" generator
    with pytest.raises(GeneratorError, match=r"unexpected keys: \['synthesis.b8.skip.weight'\]"):
        generators.load("stylegan2", checkpoint=fake_nvidia("resnet.pkl", ours, state=state),
                        resolution=64, trust_pickle=True)


def test_convert_writes_our_format_with_the_same_images(tmp_path, ours):
    from generators.convert import main as convert_main

    path = save_rosinality(tmp_path / "550000.pt", ours)
    out = tmp_path / "converted" / "sg2"
    assert convert_main(["--arch", "stylegan2", "--checkpoint", str(path), "--resolution", "64",
                         "--out", str(out)]) == 0
    gen = generators.load("stylegan2", checkpoint=out, resolution=64)  # safetensors now: no torch.load
    assert np.array_equal(gen.sample(SEEDS), NetworkGenerator("stylegan2", ours, 64, "").sample(SEEDS))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["converted_from"] == {"file": "550000.pt", "sha256": generators.sha256_file(path)}
    assert meta["options"]["channel_multiplier"] == 1 and meta["train"] is None


def test_convert_refuses_pickles_without_trust_and_our_own_files(tmp_path, ours, fake_nvidia, capsys):
    from generators.convert import main as convert_main

    pkl = fake_nvidia("snapshot.pkl", ours)
    out = tmp_path / "sg2"
    assert convert_main(["--arch", "stylegan2", "--checkpoint", str(pkl), "--resolution", "64",
                         "--out", str(out)]) == 1
    assert "trust_pickle" in capsys.readouterr().err and not out.with_suffix(".safetensors").exists()
    assert convert_main(["--arch", "stylegan2", "--checkpoint", str(pkl), "--resolution", "64",
                         "--out", str(out), "--trust-pickle"]) == 0
    assert np.array_equal(generators.load("stylegan2", checkpoint=out, resolution=64).sample(SEEDS),
                          NetworkGenerator("stylegan2", ours, 64, "").sample(SEEDS))
    assert convert_main(["--arch", "stylegan2", "--checkpoint", str(out.with_suffix(".safetensors")),
                         "--resolution", "64", "--out", str(tmp_path / "again")]) == 1
    assert "ours need no conversion" in capsys.readouterr().err
