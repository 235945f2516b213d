"""Decentralised attribution (Khoo, Phan, Lim, "Transferable Class-Modelling for Decentralized
Source Attribution of GAN-Generated Images", arXiv:2203.09777, 2022), after the authors'
released code (quarxilon/Generator_Attribution: classifier/models.py, classifier.py,
data_prep/numpy_data_gen.py).

Their design: a primary real/fake detector, then one secondary binary module per source that
branches off the primary after an intermediate layer, has the same structure as the primary's
remaining layers and its own sigmoid output, and is trained one-vs-all while every primary
layer (its BatchNorm statistics too) stays frozen. Prediction: the detector's sigmoid says
real/fake; the source whose sigmoid is highest among those >= 0.5 is the attribution, none
above -> real ("none of the known sources").

Structure here:

* primary: a torchvision ResNet (``arch`` resnet18 | resnet50, as RepMix) split into a trunk,
  stem + layer1 .. ``branch_after``, and the remaining layers, then global average pooling and
  Linear(features, 1): one logit z, p_fake = sigmoid(z). The released primary is a small
  strided-convolution CNN (three downsampling blocks, BatchNorm in every layer but the first, a
  GAP + Dense(1) head); we use a ResNet so that the comparison with RepMix shares its backbone.
  They branch after the second of three blocks; our default ``branch_after: layer3`` (of four)
  is the nearest ResNet point, and layer1 .. layer4 are options (layer4: the branch is the
  pooling and head alone, a linear probe of the primary's last features).
* secondary, one per source (class 1 .. C-1): a deep copy of the primary's remaining layers
  (the same modules, own parameters) + GAP + Linear(features, 1). ``branch_init: fresh``
  initialises each copy afresh, as the released code (it loads only the primary's layers by
  name; the secondary layers keep their new initialisation); ``branch_init: primary`` starts
  every copy from the trained primary's remaining layers instead (eval.two_stage does the copy
  when stage 2 begins).
* output (eval.models.common.ModelOutput): logits (B, C) = [0, s_1 .. s_{C-1}], the branch
  logits beside a constant 0 for real, so sigmoid(s_c) >= 0.5 iff s_c >= 0 and argmax(logits)
  is their prediction rule (up to an exact 0 logit, where the rule claims and argmax says
  real; ``decide`` is the rule itself); embedding (B, F) the primary's pooled last feature map;
  detection (B, 2) = [0, z], whose softmax is (1 - sigmoid(z), sigmoid(z)).
* losses: stage 1 (``primary_loss``) binary cross entropy of z against "is fake"; stage 2
  (``loss``) the sum over sources of each branch's mean binary cross entropy against its
  one-vs-all target (1 for its own source, 0 for real and every other source), the sum being
  what Keras minimises for a model with one loss per output. No re-sampling or class weights,
  as released: every training image trains every branch, so a branch sees one positive in C-1
  fake images plus the real ones (their data sets hold equal counts per class).

Training defaults (TRAIN_DEFAULTS, classifier.py): Adam (Keras defaults: betas (0.9, 0.999),
eps 1e-7), lr 1e-3 for the primary and 1e-4 for the secondary modules (``secondary_lr``), no
weight decay or schedule, at most 100 epochs, batch 256, early stopping on validation loss with
patience 5 checked every epoch (restore_best_weights: our `best` checkpoint). Both stages run
from one `python -m eval.train --model khoo` (eval/two_stage.py).
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.models.common import ModelError, ModelOutput, check_unmixed, parse_options
from eval.models.repmix import ARCHS, load_backbone

NAME = "khoo"
INPUT_KIND = "resized"  # a ResNet, read like RepMix's input
MIXES = 1
TWO_STAGE = True  # eval.train runs eval.two_stage: the primary, then the secondary modules
THRESHOLD = 0.5  # released THRESHOLD: a sigmoid >= 0.5 claims

TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,  # stage 1, the primary (released det runs); stage 2 takes options.secondary_lr
    "betas": (0.9, 0.999),
    "eps": 1e-7,  # Keras Adam
    "weight_decay": 0.0,
    "step_gamma": None,  # constant learning rate
    "max_epochs": 100,  # per stage
    "batch_size": 256,
    "early_stop": "val_loss",  # Keras EarlyStopping(monitor="val_loss", restore_best_weights)
    "patience": 5,  # released default of --early_stopping
    "validate_every": 1,
}

STAGES = ("layer1", "layer2", "layer3", "layer4")  # ResNet stages after the stem


@dataclasses.dataclass(frozen=True)
class KhooOptions:
    # torchvision backbone of the primary (and of each branch's copied layers)
    arch: str = dataclasses.field(default="resnet50", metadata={"choices": tuple(ARCHS)})
    # the last ResNet stage the branches share with the primary; the stages after it are copied
    branch_after: str = dataclasses.field(default="layer3", metadata={"choices": STAGES})
    # fresh: new initialisation of each branch (released); primary: start from the trained primary
    branch_init: str = dataclasses.field(default="fresh", metadata={"choices": ("fresh", "primary")})
    # stage 2's learning rate (the secondary modules; released 1e-4); stage 1 uses optim.lr
    secondary_lr: float = dataclasses.field(default=1e-4, metadata={"real_range": (0.0, 10.0)})


def parse(options: Mapping[str, Any] | None) -> KhooOptions:
    return parse_options(NAME, KhooOptions, options)


def _split(net: nn.Module, branch_after: str) -> tuple[nn.Sequential, nn.Sequential]:
    """A torchvision ResNet as (trunk: stem .. branch_after, rest: the later stages)."""
    cut = STAGES.index(branch_after) + 1
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *(getattr(net, s) for s in STAGES[:cut]))
    rest = nn.Sequential(*(getattr(net, s) for s in STAGES[cut:]))
    return trunk, rest


class BinaryHead(nn.Module):
    """Layers after the branch point, global average pooling and one logit (their GAP head)."""

    def __init__(self, body: nn.Sequential, features: int):
        super().__init__()
        self.body = body  # ResNet stages (possibly none)
        self.fc = nn.Linear(features, 1)

    def pooled(self, x: Tensor) -> Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pooled(x))


class PrimaryDetector(nn.Module):
    """The real/fake detector: trunk + its own remaining layers + one logit. As a module of its
    own it is what stage 1 trains; its output's logits are the (B, 2) [0, z] of `detection`, so
    argmax is "sigmoid(z) > 0.5" and the trainer's accuracy is detection accuracy."""

    def __init__(self, trunk: nn.Sequential, head: BinaryHead):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def read(self, trunk_features: Tensor) -> tuple[Tensor, Tensor]:
        """(embedding (B, F), detection (B, 2) = [0, z]) from the trunk's output."""
        embedding = self.head.pooled(trunk_features)
        z = self.head.fc(embedding)
        return embedding, torch.cat([torch.zeros_like(z), z], dim=1)

    def forward(self, images: Tensor) -> ModelOutput:
        embedding, detection = self.read(self.trunk(_check_images(images)))
        return ModelOutput(logits=detection, embedding=embedding, detection=detection)


class Khoo(nn.Module):
    """Primary detector and one binary secondary module per source, branching off its trunk."""

    def __init__(self, num_classes: int, options: KhooOptions = KhooOptions(),
                 weights: str | Path | None = None):
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"khoo needs at least 2 classes (real and one source), not {num_classes}")
        self.num_classes = num_classes  # C, class 0 real; C - 1 secondary modules
        self.options = options
        net = ARCHS[options.arch](weights=None)  # torchvision's initialisation, nothing downloaded
        if weights is not None:
            load_backbone(net, weights)
        features = net.fc.in_features
        trunk, rest = _split(net, options.branch_after)
        self.primary = PrimaryDetector(trunk, BinaryHead(rest, features))
        bodies = []
        for _ in range(num_classes - 1):
            if options.branch_init == "fresh":  # a fresh network's stages: the same layers, new weights
                bodies.append(_split(ARCHS[options.arch](weights=None), options.branch_after)[1])
            else:  # a copy of the primary's (replaced by the trained ones when stage 2 begins)
                bodies.append(copy.deepcopy(rest))
        self.branches = nn.ModuleList(BinaryHead(body, features) for body in bodies)
        self.primary_frozen = False

    def branches_from_primary(self) -> None:
        """Copy the primary's remaining layers into every branch (branch_init: primary)."""
        state = self.primary.head.body.state_dict()
        for branch in self.branches:
            branch.body.load_state_dict(state)

    def freeze_primary(self) -> None:
        """Stage 2: no gradient reaches the primary and its BatchNorm layers stay in eval mode
        (their running statistics are not updated), whatever train() is called with."""
        self.primary.requires_grad_(False)
        self.primary_frozen = True
        self.primary.eval()

    def train(self, mode: bool = True) -> "Khoo":
        super().train(mode)
        if self.primary_frozen:
            self.primary.eval()
        return self

    def forward(self, images: Tensor) -> ModelOutput:
        shared = self.primary.trunk(_check_images(images))
        embedding, detection = self.primary.read(shared)
        sources = torch.cat([branch(shared) for branch in self.branches], dim=1)
        logits = torch.cat([torch.zeros_like(sources[:, :1]), sources], dim=1)
        return ModelOutput(logits=logits, embedding=embedding, detection=detection)

    def submission_scores(self, output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
        """eval.predict's hook: see `submission_scores`."""
        return submission_scores(output)


def _check_images(images: Tensor) -> Tensor:
    if images.dim() != 4:
        raise ModelError(f"khoo takes (B, 3, H, W) images, not {tuple(images.shape)} (it does not mix)")
    return images


def build(num_classes: int, options: Mapping[str, Any] | None, weights: str | Path | None) -> Khoo:
    return Khoo(num_classes, parse(options), weights)


def one_vs_all(labels: Tensor, num_classes: int) -> Tensor:
    """(B,) class indices (0 real) -> (B, C-1) float targets: column c-1 is 1 iff label == c."""
    return F.one_hot(labels, num_classes)[:, 1:].float()


def _check(output: ModelOutput, labels: Tensor, mix: Tensor, columns: int, what: str) -> None:
    check_unmixed(f"khoo {what}", output, labels, mix, columns)


def loss(output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    """Stage 2: sum over sources of the mean one-vs-all binary cross entropy of each branch."""
    _check(output, labels, mix, num_classes, "loss")
    per_branch = F.binary_cross_entropy_with_logits(
        output.logits[:, 1:].float(), one_vs_all(labels[:, 0], num_classes), reduction="none").mean(dim=0)
    return per_branch.sum()


def primary_loss(output: ModelOutput, is_fake: Tensor, mix: Tensor) -> Tensor:
    """Stage 1: binary cross entropy of the primary's logit against is_fake (B, 1) in {0, 1}."""
    _check(output, is_fake, mix, 2, "primary loss")
    return F.binary_cross_entropy_with_logits(output.detection[:, 1].float(), is_fake[:, 0].float())


def decide(source_probs: Tensor) -> Tensor:
    """Their prediction rule on (B, C-1) source sigmoids: the class index (1 ..) of the highest
    one >= 0.5, the first on ties (the released loop keeps the first strict maximum); 0 (real)
    when none reaches 0.5."""
    best, index = source_probs.max(dim=1)  # torch returns the first maximal index
    return torch.where(best >= THRESHOLD, index + 1, torch.zeros_like(index))


def submission_scores(output: ModelOutput) -> tuple[Tensor, Tensor, Tensor]:
    """(scores (B, C), fake_score (B,), pred (B,)) for a submission: score_<source> the branch
    sigmoids, fake_score the primary's sigmoid, score_real = 1 - fake_score (the detector's
    own belief in "real"; the branches say nothing about real), pred by `decide`."""
    sources = torch.sigmoid(output.logits[:, 1:].float())
    fake = torch.sigmoid(output.detection[:, 1].float())
    scores = torch.cat([(1.0 - fake)[:, None], sources], dim=1)
    return scores, fake, decide(sources)
