"""Generators from other projects' checkpoint files, converted into our networks.

Supported:

* rosinality stylegan2-pytorch `.pt`/`.pth` files (its train.py checkpoints or the output of its
  convert_weight.py), as arch "stylegan2": read with ``torch.load(weights_only=True)`` (no code
  runs; argparse.Namespace, which train.py stores as "args", is the one class allowed besides
  tensors and containers), the `g_ema` state dict (or a bare generator state dict) is renamed
  key by key into generators.stylegan2 (same shapes and scalings by design), its options
  (width, channel multiplier, latent size, mapping depth) and native resolution are read off
  the tensor shapes, and the result must fill our network exactly: missing, unexpected or
  misshapen keys are an error that names them. `latent_avg`, where the file has it, becomes
  `mapping.w_avg`; otherwise w_avg is the mean w of 4096 fixed seeds. Sampling uses psi = 1.
* NVIDIA stylegan2-ada-pytorch / stylegan3 `.pkl` files (arch "stylegan2", the "skip"
  generator of config-f): pickles, so loading one runs code from the file. They are refused
  unless the caller passes trust_pickle=True, and NVIDIA's own code (its `dnnlib` and
  `torch_utils` packages) must be importable to unpickle them. `G_ema` is converted by name
  (NVIDIA's parameterisation equals ours up to reshapes; conv_clamp is carried over), and the
  converted network must reproduce NVIDIA's own forward pass on a few seeds (constant noise,
  psi 1) within NVIDIA_TOLERANCE, or loading fails.

A native resolution different from the requested one is an error: nothing is resampled.

Noise: a converted generator keeps the file's noise maps as its stored constant maps and samples
with noise_mode "seeded" (per-image noise from each seed, keyed by those maps), like the networks
we train: rosinality's generate.py samples with fresh noise per image, and a benchmark class must
not carry one noise realisation stamped into all its images. noise_mode "const" in a converted
checkpoint's sidecar gives NVIDIA's gen_images.py default (the stored maps in every image).
"""

from __future__ import annotations

import argparse
import importlib.util
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from benchmark.atomic import sha256_file
from generators.base import GeneratorError, NetworkFamily, NetworkGenerator, isolated_rng, seed_latents
from generators.style_layers import blur_kernel

TORCH_SUFFIXES = (".pt", ".pth")
PICKLE_SUFFIXES = (".pkl",)
# Seeds whose mean w stands in for w_avg when a file has no latent_avg (rosinality's
# mean_latent uses 4096 random latents; ours are fixed so the result is reproducible).
W_AVG_SEEDS = range(4096)
_ROSINALITY_BLUR = (1, 3, 3, 1)
# Largest difference allowed between NVIDIA's images and our converted network's ([-1, 1] scale).
NVIDIA_TOLERANCE = 1e-3

# rosinality name -> our name, for the parts of one styled conv / toRGB (suffix after the prefix).
_CONV_PARTS = {
    "conv.weight": "conv.weight",
    "conv.modulation.weight": "conv.affine.weight",
    "conv.modulation.bias": "conv.affine.bias",
    "noise.weight": "noise.strength",
    "activate.bias": "bias",
}
_RGB_PARTS = {
    "conv.weight": "conv.weight",
    "conv.modulation.weight": "conv.affine.weight",
    "conv.modulation.bias": "conv.affine.bias",
    "bias": "bias",
}
# Fixed filter buffers rosinality stores in its state dict; ours are constants, so these are
# checked and dropped.
_KERNEL_KEY = re.compile(r"^(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel$")


def is_external(path: Path | str) -> bool:
    """Whether `path` names a file in a foreign format (by suffix) rather than one of ours."""
    return Path(path).suffix.lower() in TORCH_SUFFIXES + PICKLE_SUFFIXES


def _rename(key: str) -> str:
    """Our key for one rosinality generator key; unknown keys come back unchanged, so the
    state-dict check reports them as unexpected under their original names."""
    if m := re.fullmatch(r"style\.(\d+)\.(weight|bias)", key):
        return f"mapping.layers.{int(m[1]) - 1}.{m[2]}"
    if key == "input.input":
        return "const"
    if m := re.fullmatch(r"noises\.noise_(\d+)", key):
        return f"layers.{m[1]}.noise.const"
    if m := re.fullmatch(r"conv1\.(.+)", key):
        if m[1] in _CONV_PARTS:
            return f"layers.0.{_CONV_PARTS[m[1]]}"
    if m := re.fullmatch(r"convs\.(\d+)\.(.+)", key):
        if m[2] in _CONV_PARTS:
            return f"layers.{int(m[1]) + 1}.{_CONV_PARTS[m[2]]}"
    if m := re.fullmatch(r"to_rgb1\.(.+)", key):
        if m[1] in _RGB_PARTS:
            return f"to_rgbs.0.{_RGB_PARTS[m[1]]}"
    if m := re.fullmatch(r"to_rgbs\.(\d+)\.(.+)", key):
        if m[2] in _RGB_PARTS:
            return f"to_rgbs.{int(m[1]) + 1}.{_RGB_PARTS[m[2]]}"
    return key


def rosinality_to_ours(state: Mapping[str, torch.Tensor], source: str = "state dict") -> dict[str, torch.Tensor]:
    """A rosinality `g_ema` state dict renamed into generators.stylegan2's keys (w_avg not included).

    The fixed [1, 3, 3, 1] filter buffers are checked and dropped; `source` names the file in errors.
    """
    expected_kernel = blur_kernel(_ROSINALITY_BLUR, 4.0)
    out = {}
    for key, value in state.items():
        if _KERNEL_KEY.match(key):
            if value.shape != expected_kernel.shape or not torch.allclose(value.float(), expected_kernel):
                raise GeneratorError(f"{source}: {key} is not the [1, 3, 3, 1] filter our StyleGAN2 uses")
            continue
        out[_rename(key)] = value
    return out


def ours_to_rosinality(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of rosinality_to_ours: our stylegan2 generator state dict in rosinality's
    names (mapping.w_avg becomes no key: rosinality keeps it beside g_ema as "latent_avg")."""
    inverse = {}
    for key in state:
        if key == "mapping.w_avg":
            continue
        if m := re.fullmatch(r"mapping\.layers\.(\d+)\.(weight|bias)", key):
            inverse[key] = f"style.{int(m[1]) + 1}.{m[2]}"
        elif key == "const":
            inverse[key] = "input.input"
        elif m := re.fullmatch(r"layers\.(\d+)\.noise\.const", key):
            inverse[key] = f"noises.noise_{m[1]}"
        elif m := re.fullmatch(r"layers\.(\d+)\.(.+)", key):
            part = {v: k for k, v in _CONV_PARTS.items()}[m[2]]
            index = int(m[1])
            inverse[key] = f"conv1.{part}" if index == 0 else f"convs.{index - 1}.{part}"
        elif m := re.fullmatch(r"to_rgbs\.(\d+)\.(.+)", key):
            part = {v: k for k, v in _RGB_PARTS.items()}[m[2]]
            index = int(m[1])
            inverse[key] = f"to_rgb1.{part}" if index == 0 else f"to_rgbs.{index - 1}.{part}"
        else:
            raise GeneratorError(f"no rosinality name for stylegan2 key {key!r}")
    out = {name: state[key] for key, name in inverse.items()}
    kernel = blur_kernel(_ROSINALITY_BLUR, 4.0)
    for name in list(out):
        if m := re.fullmatch(r"to_rgbs\.(\d+)\.bias", name):
            out[f"to_rgbs.{m[1]}.upsample.kernel"] = kernel.clone()
            # Every second rosinality conv (0, 2, ...) is an upsampling one with a blur buffer.
            out[f"convs.{2 * int(m[1])}.conv.blur.kernel"] = kernel.clone()
    return out


def _options_from_state(state: Mapping[str, torch.Tensor], source: str) -> tuple[dict[str, int], int]:
    """(stylegan2 options, native resolution) read off the tensor shapes of a rosinality g_ema."""
    needed = ("input.input", "style.1.weight", "to_rgb1.conv.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise GeneratorError(f"{source} is not a rosinality stylegan2-pytorch generator: missing keys "
                             f"{absent} (found e.g. {sorted(state)[:5]})")
    ch = state["input.input"].shape[1]
    dim_z = state["style.1.weight"].shape[1]
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    n_blocks = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
    resolution = 4 * 2**n_blocks
    # Width at resolution r is min(ch, ch * 32 * m / r); a narrower layer pins m down.
    multiplier = 2  # rosinality's default; any value fits when no layer is narrower than ch
    for k in range(n_blocks):
        width = state[f"to_rgbs.{k}.conv.weight"].shape[2]
        res = 8 * 2**k
        if width < ch:
            multiplier = max(1, round(width * res / (32 * ch)))
            break
    options = {"ch": int(ch), "channel_multiplier": multiplier, "dim_z": int(dim_z), "n_mlp": n_mlp}
    return options, resolution


def _read_torch_file(path: Path) -> object:
    try:
        # train.py stores its argparse.Namespace; allowing that one plain container class keeps
        # weights_only's guarantee that no code from the file runs.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise GeneratorError(f"checkpoint {path} could not be read with torch.load(weights_only=True): "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def _generator_state(raw: object, path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """The g_ema state dict and latent_avg (or None) of a rosinality file."""
    if not isinstance(raw, Mapping):
        raise GeneratorError(f"checkpoint {path} holds a {type(raw).__name__}, not a rosinality checkpoint dict")
    if "g_ema" in raw:
        state, latent_avg = raw["g_ema"], raw.get("latent_avg")
    elif "input.input" in raw:
        state, latent_avg = raw, None
    else:
        raise GeneratorError(f"checkpoint {path} has neither a 'g_ema' entry nor generator keys such as "
                             f"'input.input'; top-level keys: {sorted(map(str, raw))[:10]}")
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeneratorError(f"checkpoint {path}: 'g_ema' is not a state dict of tensors")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise GeneratorError(f"checkpoint {path}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
    return dict(state), latent_avg


def load_rosinality(path: Path, family: NetworkFamily, *, resolution: int, device: str) -> NetworkGenerator:
    """A rosinality stylegan2-pytorch `.pt` as our stylegan2 generator (see the module docstring)."""
    # Imported here, not at module level: generators.checkpoint imports this module.
    from generators.checkpoint import check_state_dict

    if family.NAME != "stylegan2":
        raise GeneratorError(f"checkpoint {path}: .pt/.pth files are read as rosinality stylegan2-pytorch "
                             f"generators, so the arch must be 'stylegan2', not {family.NAME!r}")
    state, latent_avg = _generator_state(_read_torch_file(path), path)
    options, native = _options_from_state(state, f"checkpoint {path}")
    if native != resolution:
        raise GeneratorError(f"checkpoint {path} is a {native} px generator, not the requested {resolution} px "
                             f"(external checkpoints are not resampled)")
    if native not in family.RESOLUTIONS:
        raise GeneratorError(f"checkpoint {path}: stylegan2 does not support its resolution {native}")
    with isolated_rng(0):
        net = family.build_generator(native, family.parse_options(options))
    # Checked in the file's own names, so an error names keys the user can find in the file.
    check_state_dict(f"checkpoint {path} (rosinality stylegan2-pytorch g_ema)",
                     ours_to_rosinality(net.state_dict()), state,
                     f"a rosinality generator with options {options} (our stylegan2 equivalent)")
    ours = {k: v.float() for k, v in rosinality_to_ours(state, f"checkpoint {path}").items()}
    if latent_avg is not None:
        if latent_avg.numel() != net.dim_z:
            raise GeneratorError(f"checkpoint {path}: latent_avg has {latent_avg.numel()} values, "
                                 f"w has {net.dim_z}")
        ours["mapping.w_avg"] = latent_avg.float().reshape(-1)
    else:
        ours["mapping.w_avg"] = net.state_dict()["mapping.w_avg"]
    net.load_state_dict(ours, strict=True)
    if latent_avg is None:
        net.eval()
        with torch.no_grad():
            net.mapping.w_avg.copy_(net.mapping(seed_latents(W_AVG_SEEDS, net.dim_z)).mean(0))
    return NetworkGenerator(family.NAME, net, native, sha256_file(path), device,
                            options=family.options_dict(family.parse_options(options)))


def _nvidia_layer_prefix(index: int) -> str:
    """NVIDIA's name of our synthesis layer `index`: b4.conv1, then conv0/conv1 of b8, b16, ..."""
    if index == 0:
        return "synthesis.b4.conv1"
    return f"synthesis.b{2 ** ((index + 1) // 2 + 2)}.conv{0 if index % 2 else 1}"


# our suffix -> (NVIDIA suffix, reshape from our shape to NVIDIA's)
_NVIDIA_LAYER_PARTS = {
    "conv.weight": ("weight", lambda t: t[0]),
    "conv.affine.weight": ("affine.weight", lambda t: t),
    "conv.affine.bias": ("affine.bias", lambda t: t),
    "noise.strength": ("noise_strength", lambda t: t.reshape(())),
    "noise.const": ("noise_const", lambda t: t[0, 0]),
    "bias": ("bias", lambda t: t),
}
_NVIDIA_RGB_PARTS = {
    "conv.weight": ("weight", lambda t: t[0]),
    "conv.affine.weight": ("affine.weight", lambda t: t),
    "conv.affine.bias": ("affine.bias", lambda t: t),
    "bias": ("bias", lambda t: t.reshape(-1)),
}


def nvidia_names(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, object]]:
    """For each key of our stylegan2 state dict: (NVIDIA stylegan2-ada-pytorch G key, reshape
    from our layout to theirs). Same parameterisation up to these reshapes (NVIDIA's
    demodulated convs omit the 1/sqrt(fan_in) factor, which demodulation cancels)."""
    out = {}
    for key in state:
        if m := re.fullmatch(r"mapping\.layers\.(\d+)\.(weight|bias)", key):
            out[key] = (f"mapping.fc{m[1]}.{m[2]}", lambda t: t)
        elif key == "mapping.w_avg":
            out[key] = ("mapping.w_avg", lambda t: t)
        elif key == "const":
            out[key] = ("synthesis.b4.const", lambda t: t[0])
        elif (m := re.fullmatch(r"layers\.(\d+)\.(.+)", key)) and m[2] in _NVIDIA_LAYER_PARTS:
            part, reshape = _NVIDIA_LAYER_PARTS[m[2]]
            out[key] = (f"{_nvidia_layer_prefix(int(m[1]))}.{part}", reshape)
        elif (m := re.fullmatch(r"to_rgbs\.(\d+)\.(.+)", key)) and m[2] in _NVIDIA_RGB_PARTS:
            part, reshape = _NVIDIA_RGB_PARTS[m[2]]
            out[key] = (f"synthesis.b{4 * 2 ** int(m[1])}.torgb.{part}", reshape)
        else:
            raise GeneratorError(f"no NVIDIA name for stylegan2 key {key!r}")
    return out


_NVIDIA_FILTER_KEY = re.compile(r"^synthesis\.b\d+(\.conv[01])?\.resample_filter$")


def ours_to_nvidia(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our stylegan2 generator state dict in NVIDIA's names and shapes, with its filter buffers."""
    out = {name: reshape(state[key]) for key, (name, reshape) in nvidia_names(state).items()}
    kernel = blur_kernel(_ROSINALITY_BLUR)
    for name in list(out):
        if m := re.fullmatch(r"(synthesis\.b\d+)(\.conv[01])?\.bias", name):
            out[f"{m[1]}.resample_filter"] = kernel.clone()
            if m[2]:
                out[f"{m[1]}{m[2]}.resample_filter"] = kernel.clone()
    return out


def _nvidia_options(state: Mapping[str, torch.Tensor], conv_clamp: float, source: str) -> tuple[dict, int]:
    """(stylegan2 options, native resolution) read off an NVIDIA generator's state dict."""
    needed = ("synthesis.b4.const", "mapping.fc0.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise GeneratorError(f"{source} is not an NVIDIA StyleGAN2 generator: missing keys {absent}")
    ch = state["synthesis.b4.const"].shape[0]
    n_mlp = sum(1 for k in state if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    dim_z = state["mapping.fc0.weight"].shape[1]
    w_dim = state[f"mapping.fc{n_mlp - 1}.weight"].shape[0]
    if w_dim != dim_z:
        raise GeneratorError(f"{source}: z has {dim_z} dims but w has {w_dim}; our stylegan2 needs them equal")
    sizes = sorted(int(m[1]) for k in state if (m := re.fullmatch(r"synthesis\.b(\d+)\.torgb\.weight", k)))
    multiplier = 2
    for res in sizes:
        width = state[f"synthesis.b{res}.torgb.weight"].shape[1]
        if width < ch:
            multiplier = max(1, round(width * res / (32 * ch)))
            break
    options = {"ch": int(ch), "channel_multiplier": multiplier, "dim_z": int(dim_z), "n_mlp": n_mlp,
               "conv_clamp": float(conv_clamp)}
    return options, max(sizes, default=4)


def _nvidia_generator(raw: object, path: Path) -> torch.nn.Module:
    net = raw.get("G_ema") if isinstance(raw, Mapping) else None
    if not isinstance(net, torch.nn.Module):
        found = sorted(map(str, raw))[:10] if isinstance(raw, Mapping) else type(raw).__name__
        raise GeneratorError(f"checkpoint {path}: no 'G_ema' network in the pickle (found {found})")
    if getattr(net, "c_dim", 0):
        raise GeneratorError(f"checkpoint {path}: a class-conditional generator (c_dim={net.c_dim}); "
                             f"only unconditional ones are supported")
    return net


def load_nvidia_pickle(path: Path, family: NetworkFamily, *, resolution: int, device: str,
                       trust_pickle: bool) -> NetworkGenerator:
    """A trusted NVIDIA stylegan2-ada-pytorch `.pkl` converted into our stylegan2 network.

    The conversion is checked against NVIDIA's own forward pass (its G_ema with constant noise)
    on a few seeds; a mismatch is an error rather than silently different images.
    """
    from generators.checkpoint import check_state_dict

    if not trust_pickle:
        raise GeneratorError(
            f"checkpoint {path} is a pickle (NVIDIA .pkl): unpickling runs code stored in the file, so it "
            f"is refused. Only for a file you trust, pass trust_pickle=True (generators.load(..., "
            f"trust_pickle=True)) with NVIDIA's stylegan2-ada-pytorch / stylegan3 code (packages dnnlib "
            f"and torch_utils) importable, or convert it to a rosinality stylegan2-pytorch .pt")
    missing = [name for name in ("dnnlib", "torch_utils") if importlib.util.find_spec(name) is None]
    if missing:
        raise GeneratorError(
            f"checkpoint {path}: trust_pickle=True was given, but NVIDIA's code is not importable "
            f"(missing packages {missing}); put a checkout of NVlabs/stylegan2-ada-pytorch or "
            f"NVlabs/stylegan3 on PYTHONPATH")
    if family.NAME != "stylegan2":
        raise GeneratorError(f"checkpoint {path}: NVIDIA pickles are read as StyleGAN2 generators, so the "
                             f"arch must be 'stylegan2', not {family.NAME!r}")
    with open(path, "rb") as f:
        try:
            raw = pickle.load(f)  # the caller vouched for this file (trust_pickle=True)
        except Exception as e:  # whatever the pickled code raises
            raise GeneratorError(f"checkpoint {path} could not be unpickled: {type(e).__name__}: {e}") from e
    ref = _nvidia_generator(raw, path).cpu().eval()
    state = {k: v.detach().float() for k, v in ref.state_dict().items()}
    clamp = getattr(getattr(getattr(getattr(ref, "synthesis", None), "b4", None), "conv1", None),
                    "conv_clamp", None)
    options, native = _nvidia_options(state, clamp or 0.0, f"checkpoint {path}")
    if native != resolution:
        raise GeneratorError(f"checkpoint {path} is a {native} px generator, not the requested {resolution} px "
                             f"(external checkpoints are not resampled)")
    if native not in family.RESOLUTIONS:
        raise GeneratorError(f"checkpoint {path}: stylegan2 does not support its resolution {native}")
    with isolated_rng(0):
        net = family.build_generator(native, family.parse_options(options))
    check_state_dict(f"checkpoint {path} (NVIDIA G_ema)", ours_to_nvidia(net.state_dict()), state,
                     f"an NVIDIA StyleGAN2 generator with options {options} (our stylegan2 equivalent)")
    names = nvidia_names(net.state_dict())
    net.load_state_dict({key: state[name].reshape(net.state_dict()[key].shape)
                         for key, (name, _) in names.items()}, strict=True)
    _check_same_images(ref, net.eval(), path)
    return NetworkGenerator(family.NAME, net, native, sha256_file(path), device,
                            options=family.options_dict(family.parse_options(options)))


def _check_same_images(ref: torch.nn.Module, net: torch.nn.Module, path: Path) -> None:
    """Raise unless our converted network reproduces NVIDIA's (constant noise, psi 1) on a few seeds."""
    z = seed_latents(range(4), net.dim_z)
    with torch.no_grad():
        theirs = ref(z, torch.zeros(len(z), 0), truncation_psi=1, noise_mode="const", force_fp32=True)
        ours = net.synthesis(net.mapping(z).unsqueeze(1).repeat(1, net.num_ws, 1))
    error = (theirs.float() - ours).abs().max().item()
    # Well below one 8-bit step (2/255) of images in [-1, 1].
    if not error <= NVIDIA_TOLERANCE:
        raise GeneratorError(f"checkpoint {path}: our conversion does not reproduce NVIDIA's images "
                             f"(max abs difference {error:.3g} > {NVIDIA_TOLERANCE}); not loaded")


def load_external(path: Path | str, family: NetworkFamily, *, resolution: int, device: str = "cpu",
                  trust_pickle: bool = False) -> NetworkGenerator:
    """Open a foreign checkpoint file (see is_external) as a generator of `family`."""
    path = Path(path)
    if not path.is_file():
        raise GeneratorError(f"checkpoint file {path} does not exist")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return load_nvidia_pickle(path, family, resolution=resolution, device=device,
                                  trust_pickle=trust_pickle)
    return load_rosinality(path, family, resolution=resolution, device=device)
