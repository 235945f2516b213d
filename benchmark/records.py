"""The records that move between build stages.

Images travel as PNG bytes in batches (a chunk of one cell), never one array per element:
the DirectRunner costs a few hundred microseconds per element, and PNG is ~4x smaller than
raw pixels over the wire of a distributed runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmark.protocol import REAL
from benchmark.real_sets import RealFile
from generators.training import GeneratorTraining

# Roles of a batch of images.
REAL_CLASS = "real_class"  # Real-class candidates (stored)
REFERENCE = "reference"  # real photos the synthetic ones are compared with (features only)
GAN_TRAIN = "gan_train"  # further generator-training photos (read only when a model trains)
CANDIDATE = "candidate"  # sampled images (selected, then stored)


@dataclass(frozen=True)
class RealChunk:
    """Photos of one semantic for one role, in the pool's priority order."""
    chunk_id: str
    semantic: str
    role: str
    files: tuple[RealFile, ...]
    first_rank: int  # priority rank of files[0] within its pool


@dataclass(frozen=True)
class ModelRef:
    """A generator ready to sample for one (source, semantic) cell."""
    source: str
    semantic: str
    arch: str
    checkpoint: str  # weights file, "" for a folder source
    folder: str  # image folder of a folder source, ""
    checkpoint_sha256: str
    samples: int  # images to draw: sample indices 0 .. samples-1 (seeds: keys.latent_seed)
    # Sampler settings of a diffusers folder as sorted (key, value) pairs, e.g. sample_steps;
    # passed to generators.load(settings=...). Empty for every other kind of model.
    settings: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class TrainTask:
    """Train `source`'s architecture on `semantic`'s training photos into `checkpoint`."""
    source: str
    semantic: str
    arch: str
    checkpoint: str
    training: GeneratorTraining  # settings as configured (None: the architecture's default)
    samples: int  # images the trained model will be asked for
    options: dict = field(default_factory=dict)
    checkpoint_every: int = 0  # training-state snapshots (resume after a crash); 0: none


@dataclass(frozen=True)
class SampleChunk:
    """Sample indices [start, stop) of a model: one batch, fixed by the config, not the runner."""
    chunk_id: str
    model: ModelRef
    start: int
    stop: int
    seeds: tuple[int, ...]  # latent seed of each index, keys.latent_seed


@dataclass(frozen=True)
class ImageBatch:
    chunk_id: str
    source: str  # `real` or a generator source
    semantic: str
    role: str
    keys: tuple[str, ...]
    pngs: tuple[bytes, ...]
    ranks: tuple[int, ...]  # priority within the pool (real), sample index in its cell (sampled)
    origins: tuple[str, ...]  # photo path relative to its folder, or "" for latent samples
    generator: str  # architecture, or `photo`
    checkpoint_sha256: str
    latent_seeds: tuple[int, ...] = ()  # the seed each sampled image was drawn with; () for photos
    # Rejection rows of inputs that did not make it into the batch. They ride along instead of
    # going to a tagged output: Beam's DaskRunner (2.77) mixes tagged outputs into the main one.
    rejections: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        # A sampled image without its seed would reach the manifest as a wrong provenance row.
        if self.source != REAL and len(self.latent_seeds) != len(self.keys):
            raise ValueError(f"batch {self.chunk_id}: {len(self.keys)} sampled images but "
                             f"{len(self.latent_seeds)} latent seeds")


@dataclass(frozen=True)
class FeatureBatch:
    chunk_id: str
    role: str  # CANDIDATE or REFERENCE
    keys: tuple[str, ...]
    features: "object"  # float32 (N, D) numpy array


@dataclass(frozen=True)
class Placement:
    """Where a kept sample goes, and why it was kept."""
    key: str
    chunk_id: str
    source: str
    semantic: str
    split: str = ""
    shard: int = -1
    position: int = -1
    cluster: int = -1
    distance: float = float("nan")
    filled: bool = False
