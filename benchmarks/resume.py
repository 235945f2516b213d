"""Time a resumed build against one from scratch: kill the real command, rerun it, compare.

    python benchmarks/resume.py [--config CFG] [--fault sample_generators:3] [--fault write_shards:3]

Without --config it builds the tiny config of tests/pipelines/test_build_e2e.py (photos made on
the spot). For each fault it runs the command with the test-only A88_FAULT hook (SIGKILL at that
point), reruns it unchanged, checks the result is byte for byte the scratch build's, and prints
the wall times and the counters that show what the rerun did not redo.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COUNTERS = ("sampled", "sampled_from_cache", "features_candidate", "features_reference",
            "features_from_cache", "shards_written", "shards_kept", "generators_trained",
            "generators_reused")


def _run(config: Path, out: Path, fault: str | None) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "A88_FAULT"}
    if fault:
        env["A88_FAULT"] = fault
    t0 = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "pipelines.build_attribution88", "--config",
                           str(config), "--out", str(out), "--quiet"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return code, time.perf_counter() - t0


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "build_stats.json"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path)
    parser.add_argument("--fault", action="append", default=[])
    args = parser.parse_args()
    faults = args.fault or ["sample_generators:3", "write_shards:3"]
    work = Path(tempfile.mkdtemp(prefix="a88-resume-"))
    try:
        config = args.config
        if config is None:
            from tests.pipelines.test_build_e2e import write_tiny_inputs

            config = write_tiny_inputs(work)
        scratch = work / "scratch"
        code, wall = _run(config, scratch, None)
        assert code == 0, f"the scratch build failed ({code})"
        stats = json.loads((scratch / "build_stats.json").read_text())
        print(f"from scratch: {wall:6.1f} s wall (build {stats['total_seconds']:.1f} s); "
              f"resume cache before deletion {stats['resume_cache_bytes'] / 1e6:.2f} MB")
        reference = _files(scratch)
        for fault in faults:
            out = work / f"killed-{fault.replace(':', '-')}"
            code, killed = _run(config, out, fault)
            assert code == -9, f"{fault}: expected SIGKILL, got {code}"
            code, resumed = _run(config, out, None)
            assert code == 0 and _files(out) == reference, f"{fault}: the resumed build differs"
            got = json.loads((out / "build_stats.json").read_text())
            counts = ", ".join(f"{k} {got['metrics'].get(k, 0)}/{stats['metrics'].get(k, 0)}"
                               for k in COUNTERS if got["metrics"].get(k) or stats["metrics"].get(k))
            print(f"killed at {fault}: killed run {killed:6.1f} s, resumed run {resumed:6.1f} s wall "
                  f"(build {got['total_seconds']:.1f} s), identical bytes; resumed/scratch: {counts}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
