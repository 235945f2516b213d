"""Perceptual feature extractors used to pick images for each benchmark cell.

Both extractors are plain callables from uint8 NHWC batches to float32 rows, so
pipelines can cache their output and the selection maths (``selection.py``)
never needs torch. Nothing here downloads: weights come from local files, or
from a fixed-seed random init (``"random"``) that every worker reproduces
bit-for-bit, which is what smoke tests use.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.atomic import sha256_file
from benchmark.weights_file import WeightsFileError, read_state_dict

__all__ = [
    "WeightsError",
    "load_state_dict",
    "InceptionFeatures",
    "LPIPSEmbedding",
    "RANDOM",
]

RANDOM = "random"
# One fixed seed per network: "random" must mean the same network in every
# worker and every run, or cached features from different shards would not mix.
_INCEPTION_SEED = 0x1CE97
_ALEX_SEED = 0xA1E7

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

Precision = Literal["fp32", "bf16"]


class WeightsError(ValueError):
    """A configured weights file is missing, unreadable or does not fit the network."""

    def __init__(self, config_key: str, path: str | Path, problem: str) -> None:
        self.config_key = config_key
        self.path = str(path)
        super().__init__(
            f"{config_key}={self.path!r}: {problem}. Set {config_key} to a local "
            f".safetensors/.pth file holding the network's state dict, or "
            f"{RANDOM!r} for smoke tests (nothing is downloaded)."
        )


def load_state_dict(path: str | Path, config_key: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a local .safetensors or .pth/.pt file onto the CPU."""
    try:
        return read_state_dict(path)
    except WeightsFileError as exc:
        raise WeightsError(config_key, path, exc.problem) from exc


def _sha256(path: Path) -> str:
    return "sha256:" + sha256_file(path)


@contextlib.contextmanager
def _quiet_construction() -> Iterator[None]:
    # Module constructors draw their default init from the global torch RNG;
    # forking it keeps callers' random streams untouched by building a network.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _seeded_init(module: nn.Module, seed: int) -> None:
    """Deterministic, scale-preserving init from a local generator.

    torch's default conv init shrinks activations ~6x per layer, which leaves a
    deep random InceptionV3 with near-zero, numerically degenerate features; He
    init keeps them O(1) so random-weight smoke runs exercise realistic ranges.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                fan_in = sub.weight[0].numel()
                w = torch.randn(sub.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in)
                sub.weight.copy_(w)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.BatchNorm2d):
                sub.reset_parameters()  # ones/zeros and unit running stats: no RNG involved


def _padded_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """(batch, rows) pairs; every batch is exactly `batch_size` images, the last one zero-padded.

    Convolution libraries pick kernels by batch shape and different kernels round differently
    (on this CPU a batch of 1 and a batch of 8 disagree in the last bits; cuDNN chooses per
    shape too), so a fixed shape makes an image's features the same bytes whatever batch the
    caller passed it in. Eval-mode networks have no cross-sample operations, so the padding
    rows change nothing else; callers keep the first `rows` outputs.
    """
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        rows = len(batch)
        if rows < batch_size:
            pad = np.zeros((batch_size - rows, *batch.shape[1:]), dtype=batch.dtype)
            batch = np.concatenate([batch, pad])
        yield batch, rows


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3); got {images.dtype} {images.shape}")
    return images


def _to_float_nchw(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    # np.ascontiguousarray: torch.from_numpy rejects negative strides (flipped views).
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
    return x.permute(0, 3, 1, 2).float()


def _check_positive(name: str, value: int) -> int:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _drop_aux_logits(state: Mapping[str, torch.Tensor], config_key: str, path: Path) -> dict[str, torch.Tensor]:
    """torchvision checkpoints carry the auxiliary classifier; pool3 never uses it."""
    return {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}


def _init_weights(net: nn.Module, weights: str | Path, seed: int, config_key: str,
                  convert: Callable[[Mapping[str, torch.Tensor], str, Path], dict[str, torch.Tensor]]) -> str:
    """Fixed-seed random init or a local state dict (mapped by `convert`); returns the weights id."""
    if str(weights) == RANDOM:
        _seeded_init(net, seed)
        return RANDOM
    path = Path(weights)
    _load_strict(net, convert(load_state_dict(path, config_key), config_key, path), config_key, path)
    return _sha256(path)


class InceptionFeatures:
    """InceptionV3 pool3 (2048-d) features, the space FID and RepMix work in."""

    dim = 2048

    def __init__(
        self,
        weights: str | Path,
        *,
        config_key: str = "features.inception.weights",
        device: str | torch.device = "cpu",
        input_size: int = 299,
        precision: Precision = "bf16",
        batch_size: int = 64,
    ) -> None:
        from torchvision.models import inception_v3

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16'; got {precision!r}")
        self.device = torch.device(device)
        self.input_size = _check_positive("input_size", input_size)
        # InceptionV3's stride-2 stem and valid convs need >= 75 px to reach pool3.
        if self.input_size < 75:
            raise ValueError(f"input_size must be >= 75 for InceptionV3; got {input_size}")
        self.batch_size = _check_positive("batch_size", batch_size)
        self.precision: Precision = precision

        with _quiet_construction():
            # transform_input=True is how torchvision runs its own inception_v3
            # weights (trained on [-1, 1] inputs) behind an ImageNet-normalised API.
            net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
        self.weights_id = _init_weights(net, weights, _INCEPTION_SEED, config_key, _drop_aux_logits)
        net.fc = nn.Identity()  # pool3 -> dropout (identity in eval) -> features
        self._net = net.eval().to(self.device, memory_format=torch.channels_last)
        mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(_IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        # Fold /255 and mean/std into one affine map applied before the resize
        # (bilinear resize commutes with per-channel affine maps).
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        row = 0
        for batch, rows in _padded_batches(images, self.batch_size):
            out[row : row + rows] = self._forward(batch)[:rows]
            row += rows
        return out

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = _to_float_nchw(batch, self.device) * self._scale + self._shift
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear",
                align_corners=False, antialias=False,
            )
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            feats = self._net(x)
        return feats.float().cpu().numpy()


def _load_strict(net: nn.Module, state: Mapping[str, torch.Tensor], config_key: str, path: Path) -> None:
    try:
        # load_state_dict(strict=True) reports missing/unexpected keys and shape mismatches.
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise WeightsError(config_key, path, "does not match the network: " + " ".join(first)[:800]) from exc


# lpips' AlexNet trunk splits torchvision's alexnet.features into five slices;
# each torchvision layer index lands in exactly one slice.
_ALEX_SLICE_OF = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def _alexnet_to_lpips(state: Mapping[str, torch.Tensor], config_key: str, path: Path) -> dict[str, torch.Tensor]:
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("classifier."):
            continue  # the fc head is not part of the LPIPS trunk
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "features" or not parts[1].isdigit() or int(parts[1]) not in _ALEX_SLICE_OF:
            raise WeightsError(config_key, path, f"unexpected key {key!r} for a torchvision alexnet state dict")
        layer = int(parts[1])
        mapped[f"slice{_ALEX_SLICE_OF[layer]}.{layer}.{parts[2]}"] = value
    return mapped


class LPIPSEmbedding:
    """Embedding phi with ||phi(x) - phi(y)||^2 == LPIPS(x, y) (AlexNet, v0.1).

    LPIPS(x, y) = sum_l mean_hw sum_c w_lc (f̂_l^x - f̂_l^y)^2, where f̂ are the
    channel-unit-normalised trunk activations and w >= 0 the learned linear
    weights. Scaling f̂_l by sqrt(w_l / (H_l W_l)) turns that sum into a squared
    L2 distance, so one forward per image replaces one forward per pair and
    nearest-neighbour search becomes a matmul. The dimension depends on the
    input resolution (~32k for 64x64, ~350k for 256x256).
    """

    def __init__(
        self,
        backbone_weights: str | Path,
        *,
        config_key: str = "features.lpips.backbone_weights",
        device: str | torch.device = "cpu",
        batch_size: int = 32,
    ) -> None:
        import lpips

        self.device = torch.device(device)
        self.batch_size = _check_positive("batch_size", batch_size)
        with _quiet_construction():
            # pretrained=True reads the linear weights shipped inside the lpips
            # wheel; pnet_rand=True stops it fetching torchvision's AlexNet.
            model = lpips.LPIPS(pretrained=True, net="alex", version="0.1", pnet_rand=True, verbose=False)
        self.weights_id = _init_weights(model.net, backbone_weights, _ALEX_SEED, config_key,
                                        _alexnet_to_lpips)
        self._normalize: Callable[[torch.Tensor], torch.Tensor] = lpips.normalize_tensor
        self._model = model.eval().to(self.device)
        lin_weights = [lin.model[-1].weight.detach() for lin in model.lins]
        if any(bool((w < 0).any()) for w in lin_weights):
            # The sqrt trick needs w >= 0; the shipped v0.1 weights are clamped so.
            raise ValueError("LPIPS linear weights are negative; the embedding would not be exact")
        self._sqrt_w = [w.reshape(1, -1, 1, 1).sqrt().to(self.device) for w in lin_weights]

    @property
    def model(self) -> nn.Module:
        """The underlying lpips.LPIPS module (for reference distances in tests)."""
        return self._model

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = _check_images(images)
        parts = [self._forward(batch)[:rows]
                 for batch, rows in _padded_batches(images, self.batch_size)]
        if not parts:
            return np.empty((0, 0), dtype=np.float32)
        return np.concatenate(parts, axis=0)

    @staticmethod
    def to_input(images: np.ndarray) -> torch.Tensor:
        """uint8 NHWC -> float NCHW in [-1, 1], the range lpips.LPIPS expects."""
        return _to_float_nchw(_check_images(images), torch.device("cpu")) / 127.5 - 1.0

    @torch.inference_mode()
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = _to_float_nchw(batch, self.device) / 127.5 - 1.0
        outs = self._model.net(self._model.scaling_layer(x))
        pieces = []
        for feat, sqrt_w in zip(outs, self._sqrt_w):
            h, w = feat.shape[-2:]
            emb = self._normalize(feat) * (sqrt_w / math.sqrt(h * w))
            pieces.append(emb.flatten(1))
        return torch.cat(pieces, dim=1).float().cpu().numpy()
