"""DCT-CNN (Frank, Eisenhofer, Schönherr, Fischer, Kolossa, Holz, "Leveraging Frequency Analysis
for Deep Fake Image Recognition", ICML 2020), as their code (RUB-SysSec/GANDCTAnalysis:
prepare_dataset.py, src/image_np.py, src/math.py, src/models.py build_simple_cnn, classifier.py).

Input transform (``DCTInput``, a differentiable module, so gradients reach the pixels):

* pixels back to [0, 255]: their prepare_dataset.py takes the DCT of the uint8 image as loaded
  (the [-1, 1] scaling is only for their raw-pixel baseline), so we map our [-1, 1] input by
  (x + 1) * 127.5 first. The log turns a pure rescaling of the pixels into an additive constant
  the z-score removes, but the offset (0 vs. -127.5 mean) changes the DC coefficient, and the
  1e-12 floor is relative to the scale, so matching their pixels keeps their numbers;
* the 2-D DCT-II, orthonormal, of each colour channel (their dct2: scipy type 2, norm="ortho",
  along rows then columns), as D @ X @ D^T with the orthonormal DCT matrix D;
* log(|c| + 1e-12) (their log_scale);
* z-score per coefficient (channel, row, column) with the mean and population standard
  deviation over the training set (their welford over all training images). The statistics are
  registered buffers, saved with the run's weights; ``fit_input_statistics(model, batches)``
  fills them from training images before training. A coefficient constant over the training
  set (std below 1e-6) is divided by 1 instead. The forward refuses to run before the statistics are
  fitted (or loaded with the weights). The transform runs in float32 even under AMP.

Network (build_simple_cnn, 'same' padding, ReLU): conv 3x3 to 3 channels, conv 3x3 to 8,
2x2 average pooling, conv 3x3 to 16, 2x2 average pooling, conv 3x3 to 32, flatten (our
embedding, 32 * (R/4)**2 values), dense to the classes (softmax in Keras; we return logits).
Keras initialisation: Glorot-uniform weights, zero biases. Reads the stored image size
(``resolution``, divisible by 4).

Training defaults (classifier.py): Adam lr 1e-3 with Keras' betas (0.9, 0.999) and epsilon 1e-7,
no weight decay, batch 32, at most 50 epochs, early stopping on the validation loss with
patience 5 (restore_best_weights), validated every epoch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eval.models.common import ModelError, ModelOutput, cross_entropy, parse_options

NAME = "dct"
INPUT_KIND = "stored"
MIXES = 1
LOG_EPSILON = 1e-12  # their log_scale epsilon

TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "betas": (0.9, 0.999),
    "eps": 1e-7,  # Keras Adam's default epsilon
    "weight_decay": 0.0,
    "step_gamma": None,
    "max_epochs": 50,
    "batch_size": 32,
    "early_stop": "val_loss",
    "patience": 5,
    "validate_every": 1,
}


@dataclasses.dataclass(frozen=True)
class DCTOptions:
    # input side in pixels (the stored benchmark resolution), divisible by 4
    resolution: int = dataclasses.field(default=128, metadata={"range": (4, 4096)})


def parse(options: Mapping[str, Any] | None) -> DCTOptions:
    parsed = parse_options(NAME, DCTOptions, options)
    if parsed.resolution % 4:
        raise ModelError(f"dct needs a resolution divisible by 4 (two 2x2 poolings), not {parsed.resolution}")
    return parsed


def dct_matrix(n: int) -> Tensor:
    """The orthonormal DCT-II matrix D (n, n): D @ x is scipy.fft.dct(x, type=2, norm="ortho")."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = math.sqrt(2.0 / n) * torch.cos(math.pi * (2 * i + 1) * k / (2 * n))
    d[0] /= math.sqrt(2.0)
    return d.float()


class DCTInput(nn.Module):
    """[-1, 1] images -> z-scored log-magnitude DCT coefficients, all differentiable."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("basis", dct_matrix(resolution), persistent=False)  # derived, not saved
        self.register_buffer("mean", torch.zeros(3, resolution, resolution))  # per-coefficient mean
        self.register_buffer("std", torch.ones(3, resolution, resolution))  # per-coefficient std
        self.register_buffer("fitted", torch.tensor(False))  # set by fit_input_statistics

    def log_spectrum(self, images: Tensor) -> Tensor:
        """log(|DCT-II(pixels in [0, 255])| + 1e-12) per channel, (B, 3, R, R)."""
        if images.dim() != 4 or images.shape[1:] != (3, self.resolution, self.resolution):
            raise ModelError(f"dct was built for (B, 3, {self.resolution}, {self.resolution}) images, "
                             f"got {tuple(images.shape)}; set option resolution to the stored size")
        # float32 even under AMP: in bf16 the DCT of [0, 255] pixels keeps ~3 digits
        with torch.autocast(images.device.type, enabled=False):
            pixels = (images.float() + 1.0) * 127.5
            coefficients = self.basis @ pixels @ self.basis.T
            return torch.log(coefficients.abs() + LOG_EPSILON)

    def forward(self, images: Tensor) -> Tensor:
        if not bool(self.fitted):
            raise ModelError("dct input statistics are not fitted: call fit_input_statistics(model, "
                             "training batches) before training, or load a trained run's weights")
        return (self.log_spectrum(images) - self.mean) / self.std


class DCTCNN(nn.Module):
    """Frank et al.'s simple CNN on the z-scored log DCT spectrum."""

    def __init__(self, num_classes: int, options: DCTOptions = DCTOptions()):
        super().__init__()
        if num_classes < 2:
            raise ModelError(f"dct needs at least 2 classes, not {num_classes}")
        self.spectrum = DCTInput(options.resolution)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 32, 3, padding=1)
        self.classify = nn.Linear(32 * (options.resolution // 4) ** 2, num_classes)
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4, self.classify):
            nn.init.xavier_uniform_(layer.weight)  # Keras glorot_uniform
            nn.init.zeros_(layer.bias)

    def forward(self, images: Tensor) -> ModelOutput:
        """images (B, 3, R, R) in [-1, 1]."""
        x = self.spectrum(images)
        x = F.relu(self.conv1(x))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
        x = F.avg_pool2d(F.relu(self.conv3(x)), 2)
        embedding = F.relu(self.conv4(x)).flatten(1)
        return ModelOutput(logits=self.classify(embedding), embedding=embedding)


@torch.no_grad()
def fit_input_statistics(model: DCTCNN, batches: Iterable[Tensor]) -> int:
    """Fill the model's per-coefficient mean and std from training images (each batch a float
    tensor (B, 3, R, R) in [-1, 1]); returns how many images were used. Population std, as
    their welford."""
    spectrum = model.spectrum
    total = torch.zeros(3, spectrum.resolution, spectrum.resolution, dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for images in batches:
        logs = spectrum.log_spectrum(images.to(spectrum.basis.device)).double().cpu()
        total += logs.sum(dim=0)
        squares += (logs ** 2).sum(dim=0)
        count += logs.shape[0]
    if count < 2:
        raise ModelError(f"dct input statistics need at least 2 training images, got {count}")
    mean = total / count
    std = (squares / count - mean ** 2).clamp(min=0).sqrt()
    std[std < 1e-6] = 1.0  # constant over the training set (up to rounding): leave it unscaled
    spectrum.mean.copy_(mean.float())
    spectrum.std.copy_(std.float())
    spectrum.fitted.fill_(True)
    return count


def build(num_classes: int, options: Mapping[str, Any] | None, weights: str | Path | None) -> DCTCNN:
    if weights is not None:
        raise ModelError(f"dct trains from scratch; weights={weights} is only for repmix's and khoo's ResNet backbones")
    return DCTCNN(num_classes, parse(options))


def loss(output: ModelOutput, labels: Tensor, mix: Tensor, num_classes: int) -> Tensor:
    return cross_entropy(NAME, output, labels, mix, num_classes)
