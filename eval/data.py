"""Shards -> batches for training and evaluation: webdataset pipeline, augmentation, RepMix pairs.

One chain of small webdataset stages (STYLE 14):

    shard list, shuffled per epoch -> split by rank -> split by DataLoader worker
    -> read tars -> parse the JSON -> keep split / seen -> sample buffer shuffle (seeded)
    -> decode the PNG (once) -> draw partners, augment each image, draw mixing weights -> batch

`corruption_device: device` moves the per-pixel and convolutional corruptions to the training
step (eval.device_corruption): the draw is the same, the loader records it instead of applying
it. The default, `loader`, gives the same batches as before, byte for byte.

What follows the released RepMix code (TuBui/image_attribution):
- train transform (`utils/augment_imagenetc.get_transforms`): Resize(256), RandomHorizontalFlip,
  RandomCrop(224), then RandomImagenetC(phase='train', p=0.95): one of the 15 seen ImageNet-C
  corruptions at a severity uniform in 1..5, computed on the 224 crop, i.e. AFTER resize and
  crop; then ToTensor and Normalize(0.5, 0.5). We keep that order: resize, flip, crop, corrupt,
  normalise. The corruption comes from `benchmark.online_corruption` (seeded per sample key and
  epoch, honouring the build's `apply_at`: `resized_224` is the released route, which corrupts a
  224 px bilinear enlargement and shrinks it back, the identity enlargement on a 224 crop).
- evaluation (`test.py`, transform 'clean'): Resize(224), normalise; no crop, no flip, no
  corruption. Val/test images are stored corrupted already, so the eval loader never corrupts.
- pairs (`utils/folder.MixupFolder3.__getitem__`): each example is its own image plus K-1
  partners drawn uniformly, with replacement, from the whole train list (`np.random.choice(N,
  K-1)`, so a partner may be the image itself); each image augmented on its own; weights from
  Dirichlet([0.4] * K) (for K = 2 that is Beta(0.4, 0.4)); 32 examples per batch.

"stored" models (Yu et al., DCT-CNN) read the stored size: flip and (a setting, on by default)
the online corruption, no resize, no crop; evaluation is the stored image, normalised.

How partners are drawn. A stream cannot give a uniform draw from the whole train set (a shuffle
buffer only sees its neighbourhood, and a worker only sees its shards), so partners are read by
random access: `_PartnerIndex` lists the eligible train samples in manifest order (split, shard,
position) with each member's byte offset in its tar (from the tar headers, scanned once per
process), and a partner is `index[rng.integers(N)]` with rng seeded by (seed, epoch, the anchor's
key, the slot). The partner's label comes from its own JSON.

Determinism, all from `DataSettings.seed` and the epoch, never pid or time:
- shard order: the sorted shard list shuffled with a seed per epoch BEFORE the rank and worker
  split (webdataset's own `shardshuffle` runs after its splitters, which would pin the same shards
  to the same worker every epoch);
- sample buffer: seeded per (epoch, worker), the same on every rank (see Rank below);
- partners, mixing weights, crops, flips and corruptions: seeded per (epoch, sample key, slot),
  so they do not depend on the worker count, the buffer or the batch at all.
What holds: with 0 or 1 worker, the same settings, seed and epoch give the same batches, bit for
bit. With N workers, an epoch yields the same set of examples (same anchors, partners, weights,
augmented pixels) for any N; the order and the batch composition depend on N (each worker
shuffles its own shards' samples and batches them; the DataLoader takes batches from the workers
in turn), and are the same for the same N. Each worker's last batch may be short.
The eval loader reads the split's shards in sorted order, no shuffle: with 0 or 1 worker the
order is the manifest's (shard, position); with N workers it is fixed for that N.
Rank (DistributedDataParallel, eval/distributed.py): ranks split samples, not shards, so every
rank gets the same number of batches whatever the shard sizes (DDP needs the same count of
steps on every rank, else it hangs). Every rank reads every shard of the epoch's list, with
the same worker split and the same buffer shuffle, so DataLoader worker w of every rank sees
the same sample stream; rank r keeps the r-th sample of each consecutive group of world_size,
before decoding (a rank decodes and augments only its own share; reading the other ranks' tar
bytes is the price of the equal split). In training an incomplete last group is dropped: each
rank keeps floor(n_w / world_size) of worker w's n_w samples, so at most world_size - 1
samples per worker stream sit out an epoch (`examples_per_rank` counts them; which ones
changes with the epoch's shuffle, none with world_size 1). The union of the ranks' examples
is then exactly the single-process epoch minus those, each example the same tensors (partners,
weights, crops and corruptions are seeded by key, never by rank), and with 0 or 1 worker the
ranks' j-th batches together are the single-process j-th batch of world_size x batch_size
examples: DDP's averaged gradient is that batch's gradient. Evaluation keeps the incomplete
group (ranks differ by at most one sample; the caller sums counts over ranks).
"""

from __future__ import annotations

import functools
import io
import json
import os
import random
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from benchmark import online_corruption
from benchmark.corruption_policy import CLEAN, CorruptionChoice
from benchmark.corruptions import names as corruption_names
from benchmark.keys import derive_seed
from benchmark.protocol import APPLY_AT_WORK_SIZE
from eval import device_corruption

if TYPE_CHECKING:
    from eval.benchmark_folder import BenchmarkFolder

INPUT_KINDS = ("resized", "stored")
CORRUPTION_DEVICES = ("loader", "device")
MIN_CORRUPT_SIDE = 32  # benchmark.corruptions refuses smaller images


@dataclass(frozen=True)
class DataSettings:
    # "resized" models (RepMix): train resize -> random crop, eval resize (the released 256/224/224)
    resize: int = 256
    crop: int = 224
    eval_size: int = 224
    # random horizontal flip in training (both kinds)
    flip: bool = True
    # online ImageNet-C corruption in training (the released `pertubation=True`), seen types only
    online_corruption: bool = True
    corruption_probability: float = 0.95
    # read only the seen semantics (the paper's protocol) in training and, by default, in eval
    seen_only: bool = True
    batch_size: int = 32  # examples (RepMix: mixed pairs) per batch
    workers: int = 2  # DataLoader workers; 0 reads in the calling process
    shuffle_buffer: int = 1000  # samples held by the shuffle buffer (per worker)
    mixes: int = 2  # K images per training example (RepMix 2; Yu / DCT 1)
    mix_alpha: float = 0.4  # Dirichlet concentration (Beta(0.4, 0.4) for K = 2)
    seed: int = 0
    # where the online corruptions run: "loader" (all on the CPU, in the loader) or "device"
    # (those of eval.device_corruption.NAMES recorded per image and applied by the training step)
    corruption_device: str = "loader"

    def __post_init__(self) -> None:
        for name in ("resize", "crop", "eval_size", "batch_size", "mixes"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DataSettings.{name} must be at least 1, "
                                 f"got {getattr(self, name)}")
        if self.crop > self.resize:
            raise ValueError(f"DataSettings.crop ({self.crop}) must not exceed "
                             f"resize ({self.resize})")
        if not 0.0 <= self.corruption_probability <= 1.0:
            raise ValueError(f"DataSettings.corruption_probability must be in [0, 1], "
                             f"got {self.corruption_probability}")
        if self.workers < 0 or self.shuffle_buffer < 0:
            raise ValueError("DataSettings.workers and shuffle_buffer must be >= 0")
        if self.mix_alpha <= 0:
            raise ValueError(f"DataSettings.mix_alpha must be > 0, got {self.mix_alpha}")
        if self.corruption_device not in CORRUPTION_DEVICES:
            raise ValueError(f"DataSettings.corruption_device must be one of "
                             f"{CORRUPTION_DEVICES}, got {self.corruption_device!r}")


# ---------------------------------------------------------------- pure per-image functions


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def resize_shorter(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(size) on a PIL image: shorter side to `size`, bilinear (antialiased)."""
    h, w = image.shape[:2]
    if min(h, w) == size:
        return image
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))


def normalise(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1]: ToTensor then Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
    x = x.permute(2, 0, 1).float().div_(255.0)
    return x.sub_(0.5).div_(0.5)


@dataclass(frozen=True)
class Augmented:
    image: np.ndarray  # uint8 (H, W, 3), before normalisation
    flipped: bool
    crop_at: tuple[int, int]  # (top, left) of the crop; (0, 0) without a crop
    corruption: CorruptionChoice
    # the corruption is left to the training step (corruption_device "device"): `image` is clean
    deferred: bool = False


def augment(image: np.ndarray, *, input_kind: str, settings: DataSettings, sample_key: str,
            epoch: int, corruptions: Sequence[str], apply_at: str,
            backend: str = "engine") -> Augmented:
    """One training image's augmentation, a pure function of (image, settings, sample_key, epoch).

    `sample_key` names the draw: the sample's key for an example's own image, a longer string for a
    partner (so a partner gets its own crop, flip and corruption). Order as the released Compose:
    resize, flip, crop, corrupt."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    rng = np.random.default_rng(derive_seed(settings.seed, f"augment-e{epoch}", sample_key))
    flip = bool(rng.random() < 0.5) and settings.flip
    top = left = 0
    if input_kind == "resized":
        image = resize_shorter(image, settings.resize)
        h, w = image.shape[:2]
        top = int(rng.integers(h - settings.crop + 1))
        left = int(rng.integers(w - settings.crop + 1))
    if flip:
        image = image[:, ::-1]
    if input_kind == "resized":
        image = image[top:top + settings.crop, left:left + settings.crop]
    image = np.ascontiguousarray(image)
    choice = CorruptionChoice(CLEAN, 0, 0)
    deferred = False
    if settings.online_corruption:
        choice = online_corruption.choose_online(
            sample_key, epoch, settings.seed, corruptions=corruptions,
            probability=settings.corruption_probability)
        deferred = _on_device(choice, settings, apply_at, image.shape[:2])
        if choice.name != CLEAN and not deferred:
            image = online_corruption.corrupt_image(image, choice, apply_at=apply_at,
                                                    backend=backend)
    return Augmented(image=image, flipped=flip, crop_at=(top, left), corruption=choice,
                     deferred=deferred)


def _on_device(choice: CorruptionChoice, settings: DataSettings, apply_at: str,
               shape: tuple[int, int]) -> bool:
    """Whether the training step applies `choice`: a device corruption, and a route that
    corrupts the image at its own size (`resized_224` on another size resizes around the
    corruption, which only the loader does)."""
    if settings.corruption_device != "device" or choice.name not in device_corruption.NAMES:
        return False
    work = APPLY_AT_WORK_SIZE.get(apply_at)
    return work is None or tuple(shape) == (work, work)


def mixing_weights(settings: DataSettings, key: str, epoch: int) -> np.ndarray:
    """K weights summing to 1: Dirichlet([alpha] * K), i.e. Beta(alpha, alpha) for K = 2; [1] for
    K = 1."""
    if settings.mixes == 1:
        return np.ones(1, dtype=np.float32)
    rng = np.random.default_rng(derive_seed(settings.seed, f"mix-e{epoch}", key))
    w = rng.dirichlet([settings.mix_alpha] * settings.mixes).astype(np.float32)
    return w / w.sum()


def eval_image(image: np.ndarray, *, input_kind: str, settings: DataSettings) -> np.ndarray:
    """The released test transform: resize to eval_size only ("resized"); the stored image as it
    is ("stored")."""
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")
    return resize_shorter(image, settings.eval_size) if input_kind == "resized" else image


# ---------------------------------------------------------------- random access for partners


@functools.lru_cache(maxsize=4096)
def _tar_members(path: str, size: int, mtime_ns: int) -> dict[str, tuple[int, int]]:
    """{member name: (data offset, size)} from one tar's headers, cached per file version, so a
    trainer scans the train tars once, not every epoch."""
    with tarfile.open(path, "r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar if m.isfile()}


def _members_of(path: Path) -> dict[str, tuple[int, int]]:
    st = os.stat(path)
    return _tar_members(str(path), st.st_size, st.st_mtime_ns)


class _PartnerIndex:
    """The eligible train samples (manifest order) and where their PNG and JSON lie in the tars."""

    def __init__(self, shards: Sequence[Path], keys: Sequence[str], shard_names: Sequence[str]):
        self.shards = [str(p) for p in shards]
        by_name = {Path(p).name: i for i, p in enumerate(self.shards)}
        members = [_members_of(Path(p)) for p in self.shards]
        self.keys = list(keys)
        # per sample: shard index, PNG offset and size, JSON offset and size (int64 arrays: small
        # to pickle into the DataLoader workers)
        self.where = np.zeros((len(self.keys), 5), dtype=np.int64)
        for i, (key, name) in enumerate(zip(self.keys, shard_names)):
            if name not in by_name:
                raise ValueError(f"manifest: sample {key} is in shard {name}, which is not among "
                                 f"the split's shards; the folder is incomplete or the manifest "
                                 f"stale")
            s = by_name[name]
            for ext in ("png", "json"):
                if f"{key}.{ext}" not in members[s]:
                    raise ValueError(f"{self.shards[s]}: no member {key}.{ext}, which the manifest "
                                     f"lists there")
            self.where[i] = (s, *members[s][f"{key}.png"], *members[s][f"{key}.json"])
        self._files: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:  # open files stay in their process
        return {k: v for k, v in self.__dict__.items() if k != "_files"} | {"_files": {}}

    def _read(self, shard: int, offset: int, size: int) -> bytes:
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.shards[shard], "rb")
        f.seek(offset)
        return f.read(size)

    def read(self, i: int) -> dict[str, Any]:
        """Sample i as the stream gives it: key, meta (the JSON), image (decoded)."""
        shard, png_at, png_size, json_at, json_size = (int(v) for v in self.where[i])
        return {"key": self.keys[i], "meta": json.loads(self._read(shard, json_at, json_size)),
                "image": decode_png(self._read(shard, png_at, png_size))}


# ---------------------------------------------------------------- pipeline stages


def _every_rank_reads_all(src: Iterable[Any]) -> Iterator[Any]:
    """The node splitter: no shard split between ranks (they split samples, `_take_rank`)."""
    yield from src


def _take_rank(src: Iterable[Any], rank: int, world_size: int, drop_tail: bool) -> Iterator[Any]:
    """The `rank`-th sample of each consecutive group of `world_size`; `drop_tail` drops an
    incomplete last group, so every rank yields the same count."""
    if world_size == 1:
        yield from src
        return
    group: list[Any] = []
    for sample in src:
        group.append(sample)
        if len(group) == world_size:
            yield group[rank]
            group = []
    if not drop_tail and rank < len(group):
        yield group[rank]


def _worker() -> int:
    info = torch.utils.data.get_worker_info()
    return 0 if info is None else info.id


def _seeded_shuffle(src: Iterable[Any], bufsize: int, seed: int, epoch: int) -> Iterator[Any]:
    """webdataset's buffer shuffle with an rng seeded per (epoch, worker), never pid/time; the
    same on every rank, which then split the shuffled stream."""
    if bufsize < 2:
        yield from src
        return
    rng = random.Random(derive_seed(seed, f"buffer-e{epoch}-w{_worker()}"))
    yield from wds.filters.shuffle(bufsize, initial=bufsize, rng=rng)(src)


def _parse(sample: dict[str, Any]) -> dict[str, Any]:
    if "json" not in sample or "png" not in sample:
        raise ValueError(f"{sample.get('__url__')}: sample {sample.get('__key__')} lacks "
                         f"{'json' if 'json' not in sample else 'png'}")
    meta = json.loads(sample["json"])
    return {"key": sample["__key__"], "meta": meta, "png": sample["png"]}


def _keep(sample: dict[str, Any], split: str, seen_only: bool) -> bool:
    meta = sample["meta"]
    return meta["split"] == split and (bool(meta["seen"]) or not seen_only)


def _decode(sample: dict[str, Any]) -> dict[str, Any]:
    return {"key": sample["key"], "meta": sample["meta"], "image": decode_png(sample.pop("png"))}


class _MakeExample:
    """Anchor -> K augmented images, their labels and the mixing weights (picklable: it travels to
    the DataLoader workers)."""

    def __init__(self, settings: DataSettings, input_kind: str, epoch: int,
                 corruptions: Sequence[str], apply_at: str, backend: str,
                 partners: _PartnerIndex | None):
        self.settings, self.input_kind, self.epoch = settings, input_kind, epoch
        self.corruptions, self.apply_at, self.backend = tuple(corruptions), apply_at, backend
        self.partners = partners

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        s, key = self.settings, sample["key"]
        members = [sample]
        draw_keys = [key]
        if s.mixes > 1:
            rng = np.random.default_rng(derive_seed(s.seed, f"partner-e{self.epoch}", key))
            for slot, i in enumerate(rng.integers(len(self.partners), size=s.mixes - 1), start=1):
                members.append(self.partners.read(int(i)))
                draw_keys.append(f"{key}+{slot}:{self.partners.keys[int(i)]}")
        augmented = [augment(m["image"], input_kind=self.input_kind, settings=s, sample_key=dk,
                             epoch=self.epoch, corruptions=self.corruptions,
                             apply_at=self.apply_at, backend=self.backend)
                     for m, dk in zip(members, draw_keys)]
        images = [normalise(a.image) for a in augmented]
        example = {
            "image": torch.stack(images),
            "label": torch.tensor([int(m["meta"]["label"]) for m in members], dtype=torch.long),
            "semantic": torch.tensor([int(m["meta"]["semantic_label"]) for m in members],
                                     dtype=torch.long),
            "mix": torch.from_numpy(mixing_weights(s, key, self.epoch)),
            "key": [m["key"] for m in members]}
        if s.corruption_device == "device":  # what the training step applies, per image
            example["device_corruption"] = torch.tensor(
                [device_corruption.record(a.corruption.name, a.corruption.severity,
                                          a.corruption.seed) if a.deferred
                 else device_corruption.record(CLEAN, 0, 0) for a in augmented],
                dtype=torch.long)
        return example


class _MakeEvalExample:
    def __init__(self, settings: DataSettings, input_kind: str):
        self.settings, self.input_kind = settings, input_kind

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = eval_image(sample["image"], input_kind=self.input_kind, settings=self.settings)
        return {"image": normalise(image), "label": int(sample["meta"]["label"]),
                "semantic": int(sample["meta"]["semantic_label"]), "key": sample["key"]}


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": [s["key"] for s in samples]}
    for name in ("image", "label", "semantic", "mix", "device_corruption"):
        if name in samples[0]:
            values = [s[name] for s in samples]
            tensors = isinstance(values[0], torch.Tensor)
            out[name] = torch.stack(values) if tensors else torch.tensor(values)
    return out


# ---------------------------------------------------------------- public loaders


def _check_kind(input_kind: str) -> None:
    if input_kind not in INPUT_KINDS:
        raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {input_kind!r}")


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")


def _eligible(folder: BenchmarkFolder, split: str, seen_only: bool):
    table = folder.manifest(columns=["key", "split", "seen", "shard"], split=split)
    rows = table.to_pylist()
    return [r for r in rows if r["split"] == split and (r["seen"] or not seen_only)]


def train_count(folder: BenchmarkFolder, settings: DataSettings) -> int:
    """Examples per epoch: the train samples the loader keeps (with several ranks, all ranks
    together but for the few `examples_per_rank` leaves out)."""
    return len(_eligible(folder, "train", settings.seen_only))


def examples_per_rank(folder: BenchmarkFolder, settings: DataSettings, epoch: int,
                      world_size: int) -> int:
    """Examples each rank's train loader yields in `epoch` (every rank the same): per DataLoader
    worker stream (its shards of the epoch's shuffled list), floor(samples / world_size)."""
    _check_rank(0, world_size)
    counts = Counter(r["shard"] for r in _eligible(folder, "train", settings.seen_only))
    names = [Path(p).name for p in _epoch_shards(folder, settings, epoch)]
    streams = max(settings.workers, 1)
    return sum(sum(counts[n] for n in names[w::streams]) // world_size for w in range(streams))


def _epoch_shards(folder: BenchmarkFolder, settings: DataSettings, epoch: int) -> list[str]:
    """The train shards in the epoch's order: sorted, shuffled with a seed per epoch."""
    urls = [str(p) for p in folder.shards("train")]
    random.Random(derive_seed(settings.seed, f"shards-e{epoch}")).shuffle(urls)
    return urls


def _loader(dataset: Any, settings: DataSettings) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=settings.workers,
                                       persistent_workers=False)


def train_loader(folder: BenchmarkFolder, settings: DataSettings, *, input_kind: str, epoch: int,
                 rank: int = 0, world_size: int = 1) -> Iterable[dict]:
    """Training batches for one epoch:
    {"image": float (B, K, 3, H, W) in [-1, 1], "label": long (B, K), "mix": float (B, K) summing to
    1 over K, "semantic": long (B, K), "key": list (B) of lists (K) of str}; K = settings.mixes, the
    example's own image first. H = W = settings.crop ("resized") or the stored size ("stored").
    With world_size > 1, rank r's share (module docstring): every rank the same number of
    batches, `examples_per_rank` examples.
    With settings.corruption_device "device", also "device_corruption": long (B, K, 3), the
    corruption each image still needs (eval.device_corruption.record; its images are clean), for
    the training step's eval.device_corruption.apply_recorded."""
    _check_kind(input_kind)
    _check_rank(rank, world_size)
    rows = _eligible(folder, "train", settings.seen_only)
    if not rows:
        raise ValueError(f"{folder.path}: no train samples"
                         f"{' of seen semantics' if settings.seen_only else ''} in the manifest")
    shards = [Path(p) for p in folder.shards("train")]
    partners = None
    if settings.mixes > 1:
        partners = _PartnerIndex(shards, [r["key"] for r in rows], [r["shard"] for r in rows])
    corruptions, apply_at, backend = (), "stored", "engine"
    if settings.online_corruption:  # the build's section: its seen set, apply_at and backend
        corruption = folder.corruption_settings
        corruptions = corruption_names("seen", corruption["unseen_set"])
        apply_at, backend = corruption["apply_at"], corruption["backend"]
    make = _MakeExample(settings, input_kind, epoch, corruptions, apply_at, backend, partners)
    dataset = (
        wds.WebDataset(_epoch_shards(folder, settings, epoch), shardshuffle=False,
                       empty_check=False, nodesplitter=_every_rank_reads_all,
                       workersplitter=wds.split_by_worker)
        .map(_parse)
        .select(functools.partial(_keep, split="train", seen_only=settings.seen_only))
        .compose(functools.partial(_seeded_shuffle, bufsize=settings.shuffle_buffer,
                                   seed=settings.seed, epoch=epoch))
        .compose(functools.partial(_take_rank, rank=rank, world_size=world_size, drop_tail=True))
        .map(_decode)
        .map(make)
        .batched(settings.batch_size, collation_fn=_collate, partial=True)
    )
    return _loader(dataset, settings)


def eval_loader(folder: BenchmarkFolder, split: str, settings: DataSettings, *, input_kind: str,
                seen_only: bool | None = None, rank: int = 0,
                world_size: int = 1) -> Iterable[dict]:
    """Evaluation batches in a fixed order, no augmentation, never corrupted again:
    {"image": float (B, 3, H, W) in [-1, 1], "label": long (B,), "semantic": long (B,),
    "key": list[str]}; H = W = settings.eval_size ("resized") or the stored size ("stored").
    `seen_only` None takes settings.seen_only. With world_size > 1, rank r gets every
    world_size-th sample from the r-th (counts differ by at most one between ranks)."""
    _check_kind(input_kind)
    _check_rank(rank, world_size)
    seen_only = settings.seen_only if seen_only is None else seen_only
    urls = [str(p) for p in folder.shards(split)]
    dataset = (
        wds.WebDataset(urls, shardshuffle=False, empty_check=False,
                       nodesplitter=_every_rank_reads_all, workersplitter=wds.split_by_worker)
        .map(_parse)
        .select(functools.partial(_keep, split=split, seen_only=seen_only))
        .compose(functools.partial(_take_rank, rank=rank, world_size=world_size, drop_tail=False))
        .map(_decode)
        .map(_MakeEvalExample(settings, input_kind))
        .batched(settings.batch_size, collation_fn=_collate, partial=True)
    )
    return _loader(dataset, settings)


def eval_count(folder: BenchmarkFolder, split: str, settings: DataSettings,
               seen_only: bool | None = None) -> int:
    """Samples the eval loader yields for `split` (all ranks together)."""
    return len(_eligible(folder, split, settings.seen_only if seen_only is None else seen_only))


# ---------------------------------------------------------------- the public sample stream


class _KeepSample:
    """The stream filter of `sample_dataset` (a class, so DataLoader workers can pickle it)."""

    def __init__(self, split: str, seen_only: bool, corruptions: frozenset[str] | None):
        self.split, self.seen_only, self.corruptions = split, seen_only, corruptions

    def __call__(self, sample: dict[str, Any]) -> bool:
        meta = sample["meta"]
        return (_keep(sample, self.split, self.seen_only)
                and (self.corruptions is None or meta["corruption"] in self.corruptions))


def _public_sample(sample: dict[str, Any]) -> dict[str, Any]:
    meta = sample["meta"]
    image = torch.from_numpy(np.ascontiguousarray(decode_png(sample["png"]).transpose(2, 0, 1)))
    return {"key": sample["key"], "image": image, "label": int(meta["label"]),
            "semantic_label": int(meta["semantic_label"]), "seen": bool(meta["seen"]),
            "corruption": meta["corruption"], "severity": int(meta["severity"])}


def corruption_filter(corruptions: Iterable[str] | None) -> frozenset[str] | None:
    """The names `sample_dataset(corruptions=...)` keeps, checked: ImageNet-C names, and
    benchmark.protocol.CLEAN ("none") for clean images; None keeps every sample."""
    if corruptions is None:
        return None
    if isinstance(corruptions, str):
        raise ValueError(f"corruptions must be a collection of names, got the string "
                         f"{corruptions!r} (write [{corruptions!r}])")
    names = frozenset(corruptions)
    known = {CLEAN, *corruption_names("all", "repmix")}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"corruptions: unknown name(s) {unknown}; known: {CLEAN!r} (clean) "
                         f"and {sorted(known - {CLEAN})}")
    return names


def sample_dataset(folder: BenchmarkFolder, split: str, *, seen_only: bool = False,
                   corruptions: Iterable[str] | None = None) -> torch.utils.data.IterableDataset:
    """The stored samples of `split` as a torch IterableDataset, in shard order, undecorated:
    {"key": str, "image": uint8 tensor (3, H, W) as stored, "label": class index,
    "semantic_label": int, "seen": bool (semantic seen in training), "corruption": str
    ("none" when clean), "severity": int (0 when clean)}.
    `seen_only` keeps the seen semantics; `corruptions` (names, "none" for clean) keeps the
    samples stored with one of them. Only the shards holding a kept sample are read. Shards
    are split between DataLoader workers (and between ranks when torch.distributed runs);
    a webdataset pipeline, so `.map(...)`, `.shuffle(...)`, `.batched(...)` chain on it."""
    wanted = corruption_filter(corruptions)
    rows = folder.manifest(["seen", "corruption", "shard"], split=split).to_pylist()
    shards = sorted({r["shard"] for r in rows if (r["seen"] or not seen_only)
                     and (wanted is None or r["corruption"] in wanted)})
    if not shards:
        raise ValueError(f"{folder.path}: no {split} samples with seen_only={seen_only}, "
                         f"corruptions={sorted(wanted) if wanted is not None else None}")
    listed = {p.name: p for p in folder.shards(split)}  # checks that each shard exists
    return (wds.WebDataset([str(listed[n]) for n in shards], shardshuffle=False,
                           empty_check=False, nodesplitter=wds.split_by_node,
                           workersplitter=wds.split_by_worker)
            .map(_parse)
            .select(_KeepSample(split, seen_only, wanted))
            .map(_public_sample))


__all__ = ["DataSettings", "Augmented", "INPUT_KINDS", "augment", "decode_png", "eval_count",
           "eval_image", "eval_loader", "examples_per_rank", "mixing_weights", "normalise", "resize_shorter",
           "sample_dataset", "train_count", "train_loader"]
