"""Time the mini build end to end: wall time, peak RSS, per-stage split, model-inference share.

    python benchmarks/build_mini.py [--config configs/mini.yaml] [--out /tmp/a88-mini] [beam flags]

Runs the real command in a child process (so its peak RSS is measured alone) and prints the
stage times the build recorded in build_stats.json. Stage times are summed over workers.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_STAGES = ("train_generators", "sample_generators", "compute_features")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "mini.yaml"))
    parser.add_argument("--out", default="/tmp/a88-mini-bench")
    args, extra = parser.parse_known_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipelines.build_attribution88", "--config", args.config,
           "--out", str(out), "--quiet", *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(f"build failed with exit code {done.returncode}", file=sys.stderr)
        return done.returncode
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stats = json.loads((out / "build_stats.json").read_text())
    info = json.loads((out / "dataset_info.json").read_text())
    stages = {k[:-3]: v / 1000 for k, v in stats["metrics"].items() if k.endswith("_ms")}
    print(f"command: {' '.join(cmd)}")
    print(f"samples: {info['samples']} in {len(info['shards'])} shards")
    print(f"wall: {wall:.1f} s (pipeline {stats['pipeline_seconds']:.1f} s), peak RSS {peak_mib:.0f} MiB (largest single process)")
    print("stage seconds (summed over workers):")
    for name, secs in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {secs:8.1f}  {100 * secs / wall:5.1f}% of wall")
    model = sum(stages.get(s, 0) for s in MODEL_STAGES)
    busy = sum(stages.values())
    print(f"model inference and training: {model:.1f} s = {100 * model / busy:.1f}% of all "
          f"stage time ({busy:.1f} s over all workers)")
    print("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["metrics"].items())
                                     if not k.endswith("_ms")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
