"""Yu, Davis, Fritz, "Attributing Fake Images to GANs: Learning and Analyzing GAN Fingerprints"
(ICCV 2019): the image-domain attribution classifier, as their public code
(ningyu1991/GANFingerprints, classifier/networks.py C_patch with classifier/config.py C_im:
fmap_base=1024, fmap_max=512, latent_res=-1, mode='postpool', switching_res=4).

Structure, for an input of 2**R pixels (R >= 3), no fromRGB layer:

* for each resolution 2**r from the input down to 8 px: two 3x3 convs, to nf(r-1) then nf(r-2)
  channels, each followed by leaky ReLU 0.2, then 2x2 average pooling;
* at 4x4: a 3x3 conv to nf(1) channels and leaky ReLU, a dense layer to max(nf(1), C) units and
  leaky ReLU (the 512-d fingerprint, our embedding), and the dense class layer (linear);
* nf(stage) = min(fmap_base / 2**stage, fmap_max) (fmap_decay 1), so the widths grow as the
  resolution falls: at 128 px 16, 32 | 32, 64 | 64, 128 | 128, 256 | 256, 512, then 512;
* their layers: 3x3 convs pad by reflection; equalized learning rate (weights stored N(0, 1),
  multiplied at run time by gain / sqrt(fan_in), gain sqrt(2), 1 for the class layer); biases
  start at zero.

It needs a power-of-two input equal to ``resolution`` (their network is built for one size), so
it reads the stored benchmark image (128 px in Attribution88; no 224 resize). Inputs are in
[-1, 1] (their drange_net); their training flips left-right (the loader's flip).

Training defaults (config.py C_opt and run.py TrainingSchedule): Adam lr 1e-3 (lrate_base; their
lrate_dict only overrides 1024 px), betas (0, 0.99), eps 1e-8, no weight decay, constant lr,
minibatch 32 (minibatch_base). They train for a fixed 100M images and watch validation accuracy;
we stop on validation accuracy (patience 3, validated each epoch, at most 30 epochs, as RepMix).
Their loss is the per-image softmax cross entropy summed over the minibatch (TF gradients of a
vector loss); ours is its mean, which Adam makes equivalent up to its epsilon.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The same layer as ProGAN's: Yu et al.'s classifier reuses ProGAN's dense layers.
from generators.progan import EqualizedLinear
from eval.models.common import ModelError, ModelOutput, cross_entropy, parse_options

NAME = "yu"
INPUT_KIND = "stored"
MIXES = 1
LEAKY_SLOPE = 0.2

TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "betas": (0.0, 0.99),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "step_gamma": None,  # constant learning rate
    "max_epochs": 30,
    "batch_size": 32,
    "early_stop": "val_acc",
    "patience": 3,
    "validate_every": 1,
}


@dataclasses.dataclass(frozen=True)
class YuOptions:
    # input side in pixels, a power of two (the stored benchmark resolution)
    resolution: int = dataclasses.field(default=128, metadata={"range": (8, 4096)})
    # nf(stage) = min(fmap_base / 2**stage, fmap_max); theirs 1024 and 512
    fmap_base: int = dataclasses.field(default=1024, metadata={"range": (2, 1 << 20)})
    fmap_max: int = dataclasses.field(default=512, metadata={"range": (1, 1 << 16)})


def parse(options: Mapping[str, Any] | None) -> YuOptions:
    parsed = parse_options(NAME, YuOptions, options)
    if parsed.resolution & (parsed.resolution - 1):
        raise ModelError(f"yu needs a power-of-two input; option resolution={parsed.resolution} is not one")
    return parsed


class EqualizedConv2d(nn.Module):
    """3x3 conv with reflection padding and run-time He scaling (equalized learning rate)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, gain: float = math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel * kernel)  # He constant for the fan-in
        self.pad = kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, [self.pad] * 4, mode="reflect")
        return F.conv2d(x, self.weight * self.scale, self.bias)


class Block(nn.Module):
    """One resolution: conv, leaky ReLU, conv, leaky ReLU, 2x2 average pooling."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, mid_channels)
        self.conv1 = EqualizedConv2d(mid_channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv0(x), LEAKY_SLOPE)
        x = F.leaky_relu(self.conv1(x), LEAKY_SLOPE)
        return F.avg_pool2d(x, 2)


class YuClassifier(nn.Module):
    """Conv blocks from the input resolution down to 4x4, then conv, fingerprint and class layer."""

    def __init__(self, num_classes: int, options: YuOptions = YuOptions()):
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"yu needs at least 2 classes, not {num_classes}")
        self.resolution = options.resolution  # the one input size the network takes

        def nf(stage: int) -> int:
            return max(1, min(int(options.fmap_base / 2.0 ** stage), options.fmap_max))

        blocks, channels = [], 3
        for r in range(int(math.log2(options.resolution)), 2, -1):  # 2**r px down to 8 px
            blocks.append(Block(channels, nf(r - 1), nf(r - 2)))
            channels = nf(r - 2)
        self.blocks = nn.Sequential(*blocks)
        self.conv = EqualizedConv2d(channels, nf(1))  # at 4x4
        self.fingerprint = EqualizedLinear(nf(1) * 16, max(nf(1), num_classes))
        self.classify = EqualizedLinear(max(nf(1), num_classes), num_classes, gain=1.0)

    def forward(self, images: Tensor) -> ModelOutput:
        """images (B, 3, R, R) in [-1, 1], R the resolution option."""
        if images.dim() != 4 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise ModelError(f"yu was built for (B, 3, {self.resolution}, {self.resolution}) images, "
                             f"got {tuple(images.shape)}; set option resolution to the input's "
                             f"power-of-two size")
        x = self.blocks(images)
        x = F.leaky_relu(self.conv(x), LEAKY_SLOPE)
        embedding = F.leaky_relu(self.fingerprint(x.flatten(1)), LEAKY_SLOPE)
        return ModelOutput(logits=self.classify(embedding), embedding=embedding)


def build(num_classes: int, options: Mapping[str, Any] | None, weights: str | Path | None) -> YuClassifier:
    if weights is not None:
        raise ModelError(f"yu trains from scratch; weights={weights} is only for repmix's and khoo's ResNet backbones")
    return YuClassifier(num_classes, parse(options))


def loss(output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    return cross_entropy(NAME, output, labels, mix, num_classes)

