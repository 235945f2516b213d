"""Time the corruption engine against the reference, and show how closely they agree.

    nice python benchmarks/corruptions.py [--sizes 128 224] [--batch 64] [--severity 3]

For each ImageNet-C corruption and image size: ms per image of the reference (`imagecorruptions`,
image by image) and of the engine (whole batch), measured in the same run, on the same
photo-like images, best of `--repeats` runs each, and their ratio; then the summed ms and the
summed ratio. The reference runs on fewer images for glass_blur (`--glass-images`); its ms per
image does not depend on the batch, it loops. Both backends are warmed up first: the reference's
glass_blur is a Numba function whose first call compiles for ~0.6 s.
The agreement columns compare the two outputs on the images both processed (fidelity.py).
Runs on one thread (OpenCV, BLAS, torch) so the ratio compares algorithms, not core counts.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.corruptions import corrupt, names  # noqa: E402
from benchmark.corruptions.fidelity import agreement, synthetic_photos  # noqa: E402


def _best_ms(fn, repeats: int, n: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000 / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--glass-images", type=int, default=8)
    parser.add_argument("--only", nargs="*", default=None, help="corruption names to time")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    print(f"threads: 1 (cv2.setNumThreads(1), OMP/BLAS/Numba env = 1); severity {args.severity}; "
          f"engine batch {args.batch}; reference glass_blur on {args.glass_images} images")
    status = 0
    for size in args.sizes:
        x = synthetic_photos(args.batch, size, seed=size)
        seeds = list(range(1000, 1000 + args.batch))
        print(f"\n{size} px{'':14s} ref ms/img  engine ms/img   ratio   agreement")
        sums = [0.0, 0.0]
        for name in args.only or names("all"):
            for backend in ("engine", "reference"):  # warm up both: Numba JIT, tables, caches
                corrupt(x[:2], name, args.severity, seeds[:2], backend=backend)
            n_ref = args.glass_images if name == "glass_blur" else args.batch
            outs = {}

            def run(backend, n):
                outs[backend] = corrupt(x[:n], name, args.severity, seeds[:n], backend=backend)

            ref_repeats = 1 if name == "glass_blur" else args.repeats
            ref = _best_ms(lambda: run("reference", n_ref), ref_repeats, n_ref)
            eng = _best_ms(lambda: run("engine", args.batch), args.repeats, args.batch)
            sums[0] += ref
            sums[1] += eng
            agree = agreement(name, x[:n_ref], outs["engine"][:n_ref], outs["reference"])
            status |= not agree.ok or eng > ref
            print(f"{name:18s} {ref:11.2f} {eng:13.2f} {ref / eng:8.1f}x   {agree.describe()[19:]}")
        print(f"{'sum':18s} {sums[0]:11.2f} {sums[1]:13.2f} {sums[0] / sums[1]:8.1f}x")
    return status


if __name__ == "__main__":
    sys.exit(main())
