"""Time `python -m pipelines.verify` on a built benchmark against a plain webdataset read.

    python benchmarks/verify.py OUT [--workers 1,2]

For each worker count, runs the real command in a child process (its own wall time and peak
RSS) and prints images/s. The reference, in this process: webdataset's own reader
(`wds.WebDataset(tars)`) over the same shards, sha256 of each PNG and a full PIL decode, one
process, i.e. the least a checker must do, without any comparison against the records. The
ratio says what the checks cost on top of reading and decoding.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def reference(folder: Path) -> tuple[int, float]:
    import webdataset as wds
    from PIL import Image

    start = time.perf_counter()
    count = 0
    for sample in wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False):
        hashlib.sha256(sample["png"]).hexdigest()
        with Image.open(io.BytesIO(sample["png"])) as image:
            image.load()
        count += 1
    return count, time.perf_counter() - start


def run_verify(folder: Path, workers: int) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pipelines.verify", str(folder), "--workers", str(workers)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    if proc.returncode != 0:
        raise SystemExit(f"verify exited {proc.returncode}: {last}")
    return seconds, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    count, ref_s = reference(args.folder)
    print(f"reference (webdataset read + sha256 + PIL decode, 1 process): {count} images, "
          f"{ref_s:.1f} s, {count / ref_s:.0f} img/s")
    for workers in (int(w) for w in args.workers.split(",")):
        seconds, last = run_verify(args.folder, workers)
        print(f"pipelines.verify --workers {workers}: {seconds:.1f} s wall (process start included), "
              f"{count / seconds:.0f} img/s, {seconds / ref_s:.2f}x the reference's time")
        print(f"  {last}")


if __name__ == "__main__":
    main()
