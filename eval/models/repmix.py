"""RepMix (Bui, Yu, Collomosse, "RepMix: Representation Mixing for Robust Attribution of
Synthesized Images", ECCV 2022), as the authors' released code (TuBui/image_attribution,
models/RepMix.py and models/torch_layers.py).

Structure:

* backbone: a torchvision ResNet50 (``arch="resnet18"`` is our addition, for CPU presets) whose
  fc becomes a linear map to a 256-d embedding (``embed_dim``). The released ResnetMixup splits it
  into six stages, [conv1+bn1+relu+maxpool, layer1, layer2, layer3, layer4,
  avgpool+flatten+fc], and inserts the mixing layer before stage ``mixup_level`` (0 mixes the
  input images, 6 the embedding). The released default, 5, mixes layer4's output before pooling
  and the fc; since pooling and fc are affine that equals mixing the embeddings.
* mixing layer, parameter-free: a training example is K images (B, K, 3, H, W) that run through
  the stages before the mixing layer as one batch of B*K (batch norm sees all of them, as in the
  released collate_fn), then become sum_k mix[b, k] * x[b, k]. The weights are the caller's: the
  loader draws them (Beta(0.4, 0.4) for K = 2, Dirichlet(0.4, ..., 0.4) otherwise, the released
  MixupFolder3). Given plain images (B, 3, H, W) the layer is the identity: that is test time
  (the released inference flag skips the layer).
* heads on the embedding: detection, Linear(256, 2) (real, fake); attribution,
  Linear(256, C) with class 0 real. The attribution logits are gated by the detection softmax p:
  logits[:, 0] = attribution[:, 0] * p_real, logits[:, 1:] = attribution[:, 1:] * p_fake, with
  gradients flowing through p (not detached). The gated logits are the model's output.
* loss (``compound_loss``): detection cross entropy with class weights [1, 1/(C-1)] (C counts
  real) against "label > 0", plus attribution cross entropy on the gated logits. Each is, per
  example, sum_k mix[b, k] * CE(prediction_b, target_{b,k}) with per-sample (unnormalised) class
  weighting, then a plain mean over the B examples, exactly as the released compute_loss
  (reduction='none', weighted sum over the mixed targets, torch.mean).
* weights: ``weights=`` a local torchvision ResNet state dict (ImageNet, e.g. torchvision's
  resnet50 file) for the backbone; its fc keys are ignored, any other missing or unexpected
  key is an error naming the file; None trains from scratch. The released code starts from
  ImageNet weights. Nothing is downloaded; the trainer records the file's sha256.

Training defaults (TRAIN_DEFAULTS, read by the trainer; the released default_hparams and
configure_optimizers): Adam lr 1e-4, betas (0.9, 0.999), weight decay 5e-4 added to the
gradient (plain Adam, not AdamW), StepLR step 1 epoch gamma 0.85, at most 30 epochs, 32 pairs per
step. Early stopping: the paper stops on validation accuracy (our default, "val_acc"); the
released train.py watches the validation loss with patience 3, validating every 2 epochs
("early_stop_released": "val_loss"); both patience 3 and every 2 epochs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from eval.models.common import ModelError, ModelOutput, parse_options, read_state_dict

NAME = "repmix"
INPUT_KIND = "resized"  # resize 256, crop 224 in training; resize 224 for evaluation
MIXES = 2  # images per training example in the released setting (mixup_samples=2)
MIX_ALPHA = 0.4  # the loader's Beta/Dirichlet concentration (mixup_beta)

TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-4,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 5e-4,  # coupled: torch.optim.Adam(weight_decay=...), as released
    "step_gamma": 0.85,  # StepLR(step_size=1 epoch)
    "max_epochs": 30,
    "batch_size": 32,  # examples (pairs) per step
    "early_stop": "val_acc",  # the paper
    "early_stop_released": "val_loss",  # the released train.py's EarlyStopping monitor
    "patience": 3,  # validations without improvement
    "validate_every": 2,  # epochs (released check_val_every_n_epoch)
}

STAGE_COUNT = 6  # stem, layer1..layer4, head (avgpool + flatten + fc)
ARCHS = {"resnet50": torchvision.models.resnet50, "resnet18": torchvision.models.resnet18}


@dataclasses.dataclass(frozen=True)
class RepMixOptions:
    # torchvision backbone; resnet50 is the paper's, resnet18 lets a CPU preset train
    arch: str = dataclasses.field(default="resnet50", metadata={"choices": tuple(ARCHS)})
    # embedding size, the fc output the heads read (released d_embed=256)
    embed_dim: int = dataclasses.field(default=256, metadata={"range": (1, 65536)})
    # stage index the mixing layer sits before; 5 = layer4's output (released), 6 = the embedding
    mixup_level: int = dataclasses.field(default=5, metadata={"range": (0, STAGE_COUNT)})


def parse(options: Mapping[str, Any] | None) -> RepMixOptions:
    return parse_options(NAME, RepMixOptions, options)


class MixingLayer(nn.Module):
    """Parameter-free representation mixing: (B*K, ...) features, (B, K) weights -> (B, ...)
    weighted sums sum_k mix[b, k] * x[b*K + k]; the identity when there are no weights."""

    def forward(self, x: Tensor, mix: Tensor | None) -> Tensor:
        if mix is None:
            return x
        batch, count = mix.shape
        assert x.shape[0] == batch * count, (x.shape, mix.shape)
        x = x.reshape(batch, count, *x.shape[1:])
        weights = mix.to(x.dtype).reshape(batch, count, *([1] * (x.dim() - 2)))
        return (x * weights).sum(dim=1)


def gate(attribution: Tensor, detection: Tensor) -> Tensor:
    """The released gating: the real logit times p_real, the fake logits times p_fake, where p is
    the detection head's softmax (gradients flow through p)."""
    p = torch.softmax(detection, dim=1)
    return torch.cat([attribution[:, :1] * p[:, :1], attribution[:, 1:] * p[:, 1:2]], dim=1)


class RepMix(nn.Module):
    """ResNet backbone with a mixing layer, a 256-d embedding, detection and attribution heads."""

    def __init__(self, num_classes: int, options: RepMixOptions = RepMixOptions(),
                 weights: str | Path | None = None):
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"repmix needs at least 2 classes (real and one source), not {num_classes}")
        self.num_classes = num_classes  # C, class 0 real
        self.mixup_level = options.mixup_level  # stage the mixing layer precedes
        # weights=None: torchvision's own initialisation, nothing downloaded
        self.backbone = ARCHS[options.arch](weights=None)
        if weights is not None:
            load_backbone(self.backbone, weights)
        self.backbone.fc = nn.Linear(self.backbone.fc.in_features, options.embed_dim)
        self.mixing = MixingLayer()
        self.detection = nn.Linear(options.embed_dim, 2)  # (real, fake)
        self.attribution = nn.Linear(options.embed_dim, num_classes)

    def _stages(self) -> tuple:
        net = self.backbone
        return (lambda x: net.maxpool(net.relu(net.bn1(net.conv1(x)))),
                net.layer1, net.layer2, net.layer3, net.layer4,
                lambda x: net.fc(torch.flatten(net.avgpool(x), 1)))

    def forward(self, images: Tensor, mix: Tensor | None = None) -> ModelOutput:
        """images (B, 3, H, W) in [-1, 1]: no mixing (test time). images (B, K, 3, H, W) with
        mix (B, K), each row summing to 1: the K images of each example are mixed."""
        if images.dim() == 4:
            if mix is not None:
                raise ModelError("repmix: mix weights given for unmixed (B, 3, H, W) images")
            x = images
        elif images.dim() == 5:
            if mix is None or mix.shape != images.shape[:2]:
                raise ModelError(f"repmix: images {tuple(images.shape)} need mix weights of shape "
                                 f"{tuple(images.shape[:2])}, got "
                                 f"{None if mix is None else tuple(mix.shape)}")
            if not torch.allclose(mix.sum(dim=1).float(), torch.ones((), device=mix.device), atol=1e-3):
                raise ModelError("repmix: each example's mix weights must sum to 1")
            x = images.flatten(0, 1)
        else:
            raise ModelError(f"repmix takes (B, 3, H, W) or (B, K, 3, H, W) images, not {tuple(images.shape)}")
        for index, stage in enumerate(self._stages()):
            if index == self.mixup_level:
                x = self.mixing(x, mix)
            x = stage(x)
        if self.mixup_level == STAGE_COUNT:
            x = self.mixing(x, mix)
        embedding = x
        detection = self.detection(embedding)
        logits = gate(self.attribution(embedding), detection)
        return ModelOutput(logits=logits, embedding=embedding, detection=detection)


def load_backbone(backbone: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ResNet state dict, its fc ignored; wrong keys name the file."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    expected = {k for k in backbone.state_dict() if not k.startswith("fc.")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ModelError(f"weights file {path} is not a torchvision {type(backbone).__name__} state dict "
                         f"for this arch: missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    try:
        backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes of another arch
        raise ModelError(f"weights file {path} does not fit the backbone: {exc}") from exc


def build(num_classes: int, options: Mapping[str, Any] | None, weights: str | Path | None) -> RepMix:
    return RepMix(num_classes, parse(options), weights)


@dataclasses.dataclass
class RepMixLoss:
    detection: Tensor  # class-weighted, mix-weighted detection cross entropy
    attribution: Tensor  # mix-weighted cross entropy of the gated logits
    total: Tensor  # their sum, what is minimised


def compound_loss(output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> RepMixLoss:
    """The released compute_loss. labels (B, K) class indices (0 real), mix (B, K)."""
    logits, detection = output.logits.float(), output.detection
    if detection is None or labels.shape != mix.shape or labels.dim() != 2 \
            or logits.shape != (labels.shape[0], num_classes):
        raise ModelError(f"repmix loss: logits {tuple(logits.shape)}, labels {tuple(labels.shape)} and "
                         f"mix {tuple(mix.shape)} do not fit (B, {num_classes}), (B, K), (B, K)")
    detection = detection.float()
    class_weights = torch.tensor([1.0, 1.0 / (num_classes - 1)], device=logits.device)
    is_fake = (labels > 0).long()
    mix = mix.float()
    det = sum(mix[:, k] * F.cross_entropy(detection, is_fake[:, k], weight=class_weights, reduction="none")
              for k in range(labels.shape[1]))
    attr = sum(mix[:, k] * F.cross_entropy(logits, labels[:, k], reduction="none")
               for k in range(labels.shape[1]))
    det, attr = det.mean(), attr.mean()
    return RepMixLoss(detection=det, attribution=attr, total=det + attr)


def loss(output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    return compound_loss(output, labels, mix, num_classes).total
