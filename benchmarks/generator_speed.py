"""Sampling and training speed of every network architecture on this machine.

    python benchmarks/generator_speed.py [--arch sngan stylegan2 ...] [--resolutions 64 128]
        [--batch 64] [--threads 2] [--train-steps 3] [--options '{"stylegan3": {"ch": 16}}']

For each architecture, at each resolution: a freshly initialised generator at the
architecture's published width (or --options), images/s of `sample()` on one batch of
--batch seeds, and generator updates/s of `generators.training.fit` on random photos (a few
steps, batch 16, the architecture's own n_dis and losses). Rates only: the weights are random,
which does not change the arithmetic. Peak RSS of the whole run is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import numpy as np  # noqa: E402
import torch  # noqa: E402

import generators  # noqa: E402
from benchmark.protocol import FOLDER_ONLY_ARCHS  # noqa: E402
from generators.base import NetworkGenerator, isolated_rng  # noqa: E402
from generators.training import fit, resolve_config  # noqa: E402

# Architectures we train (the others read a folder made elsewhere).
NETWORK_ARCHS = tuple(a for a in generators.ARCHITECTURES if a not in FOLDER_ONLY_ARCHS)


def sampling_rate(arch: str, resolution: int, options: dict, batch: int) -> float:
    module = generators.family(arch)
    opts = module.parse_options(options)
    with isolated_rng(0):
        net = module.build_generator(resolution, opts)
    gen = NetworkGenerator(arch, net, resolution, "benchmark")
    gen.sample(range(2))  # warm-up: first-call allocations and lazy kernels
    start = time.perf_counter()
    gen.sample(range(batch))
    return batch / (time.perf_counter() - start)


def training_rate(arch: str, resolution: int, options: dict, steps: int) -> float:
    module = generators.family(arch)
    images = np.random.default_rng(0).integers(0, 256, (64, resolution, resolution, 3), dtype=np.uint8)
    config = resolve_config(module, steps=steps, batch_size=16, seed=0)
    start = time.perf_counter()
    fit(module, images, config, module.parse_options(options))
    return steps / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=list(NETWORK_ARCHS), choices=NETWORK_ARCHS)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[64, 128])
    parser.add_argument("--batch", type=int, default=64, help="seeds sampled per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--train-steps", type=int, default=3, help="0 skips the training rate")
    parser.add_argument("--options", default="{}", help="JSON: arch -> options (default: published sizes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = json.loads(args.options)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}")
    print(f"{'arch':<10} {'px':>4} {'options':<28} {'sample img/s':>12} {'train steps/s':>14}")
    for arch in args.arch:
        for res in args.resolutions:
            opts = options.get(arch, {})
            rate = sampling_rate(arch, res, opts, args.batch)
            train = training_rate(arch, res, opts, args.train_steps) if args.train_steps else float("nan")
            print(f"{arch:<10} {res:>4} {json.dumps(opts):<28} {rate:12.2f} {train:14.3f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
