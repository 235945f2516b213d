"""Does the training data path keep a GPU busy? The loader's images/s per worker, the online
corruptions' cost, a torchvision reference, and RepMix-ResNet50's step rate on this machine.

    nice python benchmarks/data_path.py [--images 512] [--side 128] [--workers 0 1 2]
        [--batch 32] [--model-steps 3] [--model-batch 8] [--gpu-rate 2470] [--cores 16] [--quick]

On synthetic shards built in a temporary folder (`--side` px stored, Attribution88's 128 by
default; photo-like images, a PNG each, dealt over 4 tars), through eval.data's real training
loader (RepMix: resize 256, flip, random crop 224, the online corruption, normalise; a partner
per example read by random access), it prints:

1. loader images/s with 0, 1, 2 DataLoader workers, online corruption off, on in the loader (p
   0.95, the 15 seen types, severity 1..5), and on with `corruption_device: device` (the 9
   per-pixel and convolutional ones left to the training step); per worker = total / workers
   (0 workers: the main process).
   Timed from the first batch to the last, so worker start-up is left out.
2. the per-corruption cost at the training crop: ms per image of each seen corruption through
   the loader's own call (benchmark.online_corruption.corrupt_image), the mean over severities
   1..5, and the expected cost per training image at p = 0.95, uniform over types and severities.
3. a reference in the same run: torchvision.transforms.v2 (Resize 256, RandomCrop 224,
   RandomHorizontalFlip, ToImage/ToDtype/Normalize) on the same decoded images as PIL images (the
   released RepMix loader's input), vs eval.data.augment + normalise without corruption; ratio.
4. RepMix-ResNet50 forward+backward images/s at 224 on this machine's CPU (labelled CPU), a few
   Adam steps on random pairs.
5. where a worker's time goes: ms per image of each loader step timed in one process (read
   and decode a PNG, resize + flip + crop, normalise, collate) beside the expected corruption.
6. the verdict: `--gpu-rate` (images/s of one GPU's ResNet50 training step at 224; default 2470,
   NVIDIA DeepLearningExamples ResNet50 v1.5 PyTorch, 1x A100 80GB, AMP) divided by the
   measured per-worker rate (1 worker: a worker with a core of its own), with corruption in
   the loader, with the device ones deferred, and off: the workers one GPU needs, vs `--cores`,
   and the share of a worker's time the corruption takes.
7. the device path (eval.device_corruption) run on this CPU vs the CPU engine, ms per image.

Figures are rates on this machine, in one run; on a shared machine quote the ratios.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per loader worker, as a DataLoader worker gets

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, replace  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmark import online_corruption  # noqa: E402
from benchmark.corruption_policy import CorruptionChoice  # noqa: E402
from benchmark.corruptions import names as corruption_names  # noqa: E402
from benchmark.corruptions.fidelity import synthetic_photos  # noqa: E402
from benchmark.manifest import MANIFEST_SCHEMA, write_manifest  # noqa: E402
from benchmark.protocol import SEVERITIES  # noqa: E402
from benchmark.shards import ShardSample, write_shard  # noqa: E402
from eval import data, device_corruption, models  # noqa: E402
from eval.benchmark_folder import BenchmarkFolder, open_benchmark  # noqa: E402

CLASSES = ("real", "sngan", "progan")
# the loader's corruption settings each rate is measured with
MODES = {"off": {"online_corruption": False},
         "loader": {"online_corruption": True, "corruption_device": "loader"},
         "device": {"online_corruption": True, "corruption_device": "device"}}
SEMANTICS = (("celeba", True), ("bedroom", True))
UNSEEN_SET = "repmix"
# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training
# performance: NVIDIA DGX A100 (8x A100 80GB)", 1 GPU, mixed precision (pytorch-21.03 container).
DLE_A100_AMP = 2470.0
DLE_SOURCE = ("https://github.com/NVIDIA/DeepLearningExamples/blob/master/PyTorch/Classification/"
              "ConvNets/resnet50v1.5/README.md (1x A100 80GB, AMP)")


# ---------------------------------------------------------------- synthetic shards


def _png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def build_shards(root: Path, images: int, side: int = 128, shards: int = 4,
                 apply_at: str = "stored") -> BenchmarkFolder:
    """A benchmark folder with `images` photo-like train images of `side` px over `shards` tars
    (classes and seen semantics dealt in turn), plus the manifest, classes.json and
    dataset_info.json the loader reads."""
    root.mkdir(parents=True, exist_ok=True)
    pixels = synthetic_photos(images, side, seed=side)
    samples = []
    for i in range(images):
        label, (semantic, seen) = i % len(CLASSES), SEMANTICS[(i // len(CLASSES)) % len(SEMANTICS)]
        row = {c: None for c in MANIFEST_SCHEMA.names}
        row.update(key=f"{CLASSES[label]}-{semantic}-train-s{i:06d}", split="train",
                   source=CLASSES[label], label=label, semantic=semantic,
                   semantic_label=SEMANTICS.index((semantic, seen)), seen=seen,
                   generator=CLASSES[label], checkpoint_sha256="", sample_index=i, latent_seed=i,
                   origin="", cluster=-1, filled=False, corruption="none", severity=0,
                   corruption_seen=True, corruption_seed=0, sha256="", png_bytes=0)
        samples.append((row, pixels[i]))
    samples.sort(key=lambda s: s[0]["key"])
    rows = []
    for s in range(shards):
        name = f"train-{s:06d}.tar"
        members = samples[s::shards]
        for pos, (row, _) in enumerate(members):
            row.update(shard=name, position=pos)
        write_shard(root / name, [ShardSample(r["key"], _png(img), dict(r)) for r, img in members])
        rows += [r for r, _ in members]
    write_manifest(rows, root / "manifest.parquet")
    (root / "classes.json").write_text(json.dumps({
        "classes": list(CLASSES),
        "semantics": [{"name": n, "label": i, "seen": seen}
                      for i, (n, seen) in enumerate(SEMANTICS)]}))
    (root / "dataset_info.json").write_text(json.dumps({
        "resolution": side, "corruptions": {"unseen_set": UNSEEN_SET, "apply_at": apply_at}}))
    return open_benchmark(root)


def decoded_images(folder: BenchmarkFolder, count: int) -> list[np.ndarray]:
    """The first `count` train images, decoded as the loader decodes them."""
    import tarfile

    out = []
    for shard in folder.shards("train"):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".png"):
                    out.append(data.decode_png(tar.extractfile(member).read()))
                    if len(out) == count:
                        return out
    return out


# ---------------------------------------------------------------- measurements


@dataclass(frozen=True)
class LoaderRate:
    workers: int
    corruption: bool
    images_per_s: float  # all workers together (K images per example)

    @property
    def per_worker(self) -> float:
        return self.images_per_s / max(self.workers, 1)


def loader_rate(folder: BenchmarkFolder, settings: data.DataSettings,
                input_kind: str = "resized") -> LoaderRate:
    """Images/s of one training epoch through eval.data.train_loader, from the first batch to the
    last (the first batch, which includes worker start-up and filling the shuffle buffer, is
    not counted)."""
    images, start = 0, None
    for batch in data.train_loader(folder, settings, input_kind=input_kind, epoch=0):
        if start is None:
            start = time.perf_counter()
            continue
        images += batch["label"].numel()
    seconds = time.perf_counter() - start if start is not None else 0.0
    if images == 0 or seconds <= 0:
        raise ValueError(f"{folder.path}: too few train images for a timed batch after the first "
                         f"(batch {settings.batch_size})")
    return LoaderRate(settings.workers, settings.online_corruption, images / seconds)


def augmented_crops(images: list[np.ndarray], settings: data.DataSettings) -> list[np.ndarray]:
    """The loader's clean 224 crops of `images` (resize 256, flip, crop; no corruption)."""
    clean = replace(settings, online_corruption=False)
    return [data.augment(img, input_kind="resized", settings=clean, sample_key=f"k{i}", epoch=0,
                         corruptions=(), apply_at="stored").image for i, img in enumerate(images)]


def corruption_costs(crops: list[np.ndarray], corruptions: tuple[str, ...],
                     apply_at: str = "stored",
                     repeats: int = 1) -> dict[str, dict[int, float]]:
    """{corruption: {severity: ms per image}} through the loader's own call, one image a call,
    each image its own seed; best of `repeats`. Warmed up first (Numba, tables, frost files)."""
    out: dict[str, dict[int, float]] = {}
    for name in corruptions:
        out[name] = {}
        for severity in SEVERITIES:
            online_corruption.corrupt_image(crops[0], CorruptionChoice(name, severity, 1),
                                            apply_at=apply_at)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                for i, crop in enumerate(crops):
                    choice = CorruptionChoice(name, severity, 1000 + i)
                    online_corruption.corrupt_image(crop, choice, apply_at=apply_at)
                best = min(best, time.perf_counter() - t0)
            out[name][severity] = best * 1000 / len(crops)
    return out


def expected_corruption_ms(costs: dict[str, dict[int, float]], probability: float) -> float:
    """Mean cost per training image: p times the mean over types and severities (the online
    policy draws both uniformly)."""
    per_type = [float(np.mean(list(by_severity.values()))) for by_severity in costs.values()]
    return probability * float(np.mean(per_type))


def ours_vs_torchvision(images: list[np.ndarray], settings: data.DataSettings,
                        repeats: int = 2) -> tuple[float, float]:
    """(ours, torchvision) images/s of the training transform without corruption on the same
    decoded images: eval.data.augment + normalise vs torchvision.transforms.v2 on PIL images
    (resize 256, random crop 224, flip, to a float tensor, normalise to [-1, 1])."""
    from torchvision.transforms import v2

    clean = replace(settings, online_corruption=False)
    reference = v2.Compose([
        v2.ToImage(), v2.Resize(settings.resize), v2.RandomCrop(settings.crop),
        v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3)])
    pil = [Image.fromarray(img) for img in images]

    def ours():
        for i, img in enumerate(images):
            data.normalise(data.augment(img, input_kind="resized", settings=clean,
                                        sample_key=f"k{i}", epoch=0, corruptions=(),
                                        apply_at="stored").image)

    def theirs():
        for img in pil:
            reference(img)

    return tuple(_interleaved_rates([ours, theirs], len(images), repeats))


def _interleaved_rates(fns, count: int, repeats: int) -> list[float]:
    """Items/s of each function, best of `repeats` runs taken in turn (A B A B ...), so a load
    spike on a shared machine hits both sides alike; one untimed warm-up run each."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return [count / b for b in best]


def stage_costs(folder: BenchmarkFolder, settings: data.DataSettings, count: int,
                corruption_ms: float, repeats: int = 2) -> dict[str, float]:
    """ms per training image of each step the loader takes for it, in one process: read and
    decode the PNG (the partner's random read), resize + flip + crop, normalise to float, and a
    batch's collation (per image); `corruption_ms` (expected) added as given."""
    rows = data._eligible(folder, "train", settings.seen_only)
    index = data._PartnerIndex([Path(p) for p in folder.shards("train")],
                               [r["key"] for r in rows], [r["shard"] for r in rows])
    count = min(count, len(index))
    clean = replace(settings, online_corruption=False)
    decoded = [index.read(i)["image"] for i in range(count)]
    crops = augmented_crops(decoded, settings)
    tensors = [data.normalise(c) for c in crops]
    batch = settings.batch_size * settings.mixes

    def read():
        for i in range(count):
            index.read(i)

    def augment():
        for i, img in enumerate(decoded):
            data.augment(img, input_kind="resized", settings=clean, sample_key=f"k{i}", epoch=0,
                         corruptions=(), apply_at="stored")

    def normalise():
        for c in crops:
            data.normalise(c)

    def collate():
        for start in range(0, count, batch):
            torch.stack(tensors[start:start + batch])

    rates = _interleaved_rates([read, augment, normalise, collate], count, repeats)
    out = {name: 1000 / r for name, r in zip(
        ("read + decode PNG", "resize + flip + crop", "normalise (float32)", "collate"), rates)}
    out["online corruption (expected)"] = corruption_ms
    return out


def model_rate(arch: str = "resnet50", size: int = 224, pairs: int = 8, steps: int = 3,
               classes: int = len(CLASSES)) -> float:
    """Images/s of RepMix training steps (forward, compound loss, backward, Adam) on this
    machine's CPU, on random pairs of `size` px (K = 2 images per example); one untimed step
    first."""
    torch.manual_seed(0)
    model = models.build_model("repmix", classes, options={"arch": arch})
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(pairs, 2, 3, size, size, generator=gen) * 2 - 1
    labels = torch.randint(0, classes, (pairs, 2), generator=gen)
    mix = torch.distributions.Dirichlet(torch.full((2,), 0.4)).sample((pairs,))

    def step():
        loss = models.loss("repmix", model(images, mix), labels, mix, classes)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * pairs * 2 / (time.perf_counter() - t0)


def device_path_costs(crops: list[np.ndarray], names: Sequence[str],
                      repeats: int = 1) -> dict[str, float]:
    """ms per image of eval.device_corruption on this CPU, the crops as one batch, mean over
    severities 1..5 (best of `repeats` each); one untimed run per corruption first."""
    levels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float()
    seeds = list(range(len(crops)))
    out = {}
    for name in names:
        device_corruption.corrupt(levels[:1], [name], [1], seeds[:1])
        per_severity = []
        for severity in SEVERITIES:
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                device_corruption.corrupt(levels, [name] * len(crops), [severity] * len(crops),
                                          seeds)
                best = min(best, time.perf_counter() - t0)
            per_severity.append(best * 1000 / len(crops))
        out[name] = float(np.mean(per_severity))
    return out


def workers_needed(gpu_rate: float, per_worker: float) -> float:
    return gpu_rate / per_worker


# ---------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="synthetic train images")
    parser.add_argument("--side", type=int, default=128, help="stored size (Attribution88: 128)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32, help="examples (pairs) per batch")
    parser.add_argument("--cost-images", type=int, default=16,
                        help="crops per corruption and severity for the cost table")
    parser.add_argument("--apply-at", default="stored", choices=("stored", "resized_224"))
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--model-steps", type=int, default=3, help="0 skips the CPU model rate")
    parser.add_argument("--model-batch", type=int, default=8, help="pairs per CPU training step")
    parser.add_argument("--gpu-rate", type=float, default=DLE_A100_AMP,
                        help="images/s of one GPU's ResNet50 training step at 224")
    parser.add_argument("--cores", type=int, default=16, help="CPU cores per GPU on the host")
    parser.add_argument("--work", type=Path, default=None, help="folder for the shards (temp)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 96 images, workers 0 1, 4 crops, resnet18 at 64 px")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.workers, args.cost_images, args.batch = 96, [0, 1], 4, 8
        args.arch, args.model_steps, args.model_batch = "resnet18", 1, 2
    model_size = 64 if args.quick else 224
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_shards((args.work or Path(tmp)) / "bench", args.images, args.side,
                              apply_at=args.apply_at)
        base = data.DataSettings(batch_size=args.batch, seed=0)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs here, 1 thread per process; "
              f"{args.images} images at {args.side} px stored, 4 shards; resize {base.resize}, "
              f"crop {base.crop}, K = {base.mixes}, batch {args.batch} pairs; apply_at "
              f"{args.apply_at}")

        print("\n1. loader (eval.data.train_loader), images/s")
        print(f"{'workers':>7} {'corruption':>10} {'total':>9} {'per worker':>11}")
        rates: dict[tuple[int, str], LoaderRate] = {}
        for workers in args.workers:
            for mode, settings in MODES.items():
                rate = loader_rate(folder, replace(base, workers=workers, **settings))
                rates[workers, mode] = rate
                print(f"{workers:>7} {mode:>10} {rate.images_per_s:9.1f} "
                      f"{rate.per_worker:11.1f}", flush=True)
        print("(off: no online corruption; loader: all in the workers, the default; device: "
              "the workers leave eval.device_corruption's 9 to the training step)")

        images = decoded_images(folder, args.cost_images)
        crops = augmented_crops(images, base)
        seen = corruption_names("seen", UNSEEN_SET)
        costs = corruption_costs(crops, seen, args.apply_at, repeats=1 if args.quick else 3)
        print(f"\n2. online corruption cost at {base.crop} px, ms/img (mean of severities 1..5)")
        for name in sorted(costs, key=lambda n: -np.mean(list(costs[n].values()))):
            by = costs[name]
            print(f"{name:18s} {np.mean(list(by.values())):6.2f}   "
                  + " ".join(f"s{s} {by[s]:5.2f}" for s in SEVERITIES))
        expected = expected_corruption_ms(costs, base.corruption_probability)
        print(f"expected per training image (p {base.corruption_probability}, uniform type and "
              f"severity): {expected:.2f} ms")

        ours, theirs = ours_vs_torchvision(images * max(1, 64 // len(images)), base,
                                           repeats=1 if args.quick else 3)
        print(f"\n3. transform without corruption, images/s: ours {ours:.1f}, torchvision v2 "
              f"{theirs:.1f} (ours / torchvision = {ours / theirs:.2f})")

        if args.model_steps:
            rate = model_rate(args.arch, model_size, args.model_batch, args.model_steps)
            print(f"\n4. CPU (1 thread, this machine): RepMix-{args.arch} forward+backward+Adam at "
                  f"{model_size} px, {args.model_batch} pairs: {rate:.2f} img/s")

        stages = stage_costs(folder, base, max(args.cost_images, 32), expected,
                             repeats=1 if args.quick else 3)
        print("\n5. one image's steps in one process, ms (the loader does each once per image)")
        for name, ms in stages.items():
            print(f"{name:30s} {ms:6.2f}")
        total = sum(stages.values())
        print(f"{'sum':30s} {total:6.2f}  (corruption {100 * expected / total:.0f}% of it)")

        # a worker with a core of its own, as on the host (the main process only waits on it):
        # 1 worker when measured; on a 2-core shared machine 2 workers share the cores
        workers = 1 if 1 in args.workers else max(args.workers)
        on, off = rates[workers, "loader"].per_worker, rates[workers, "off"].per_worker
        deferred = rates[workers, "device"].per_worker
        movable = {n: c for n, c in costs.items() if n in device_corruption.NAMES}
        movable_ms = expected_corruption_ms(movable, base.corruption_probability) * len(movable) \
            / len(costs)
        print(f"\n6. verdict. One GPU trains ResNet50 at 224 at {args.gpu_rate:.0f} img/s "
              f"({DLE_SOURCE if args.gpu_rate == DLE_A100_AMP else '--gpu-rate, given'}).")
        print(f"   per worker ({workers} worker{'s' * (workers != 1)}): {on:.1f} img/s with "
              f"corruption, {off:.1f} without: the corruption takes {100 * (1 - on / off):.0f}% "
              f"of a worker's time ({1000 / on:.2f} ms vs {1000 / off:.2f} ms per image)")
        for label, rate in (("with corruption", on), ("corruption_device", deferred),
                            ("without corruption", off)):
            need = workers_needed(args.gpu_rate, rate)
            verdict = (f"keeps up, {args.cores / need:.2f}x to spare" if need <= args.cores
                       else f"STARVES the GPU, {need / args.cores:.2f}x short")
            print(f"   {label:19s}: {need:5.1f} workers per GPU vs {args.cores} cores: {verdict}")
        print(f"   eval.device_corruption's {len(movable)} of the {len(costs)} cost "
              f"{movable_ms:.2f} "
              f"ms per training image in the engine: off the workers, a worker gains at most "
              f"{1000 / on / (1000 / on - movable_ms):.2f}x (measured: {deferred / on:.2f}x)")

        dev = device_path_costs(crops, device_corruption.NAMES, repeats=1 if args.quick else 2)
        print(f"\n7. the device path on this CPU (torch, 1 thread, batches of {len(crops)}) vs the "
              f"CPU engine (one image a call, as the loader), ms/img, mean of severities")
        for name in device_corruption.NAMES:
            engine = float(np.mean(list(costs[name].values())))
            print(f"{name:18s} torch {dev[name]:6.2f}  engine {engine:6.2f}  "
                  f"(torch / engine {dev[name] / engine:5.2f})")
        torch_sum = sum(dev.values())
        engine_sum = sum(float(np.mean(list(costs[n].values()))) for n in device_corruption.NAMES)
        print(f"{'sum':18s} torch {torch_sum:6.2f}  engine {engine_sum:6.2f}  "
              f"(torch / engine {torch_sum / engine_sum:5.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
