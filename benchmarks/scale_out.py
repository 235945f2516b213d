"""Scale-out figures of the build: worker speedup, per-stage rates, peak RSS, full-protocol cost.

    python benchmarks/scale_out.py workers [--workers 1 2] [--config configs/mini.yaml]
    python benchmarks/scale_out.py memory --generators DIR [--sizes 1000 4000]
    python benchmarks/scale_out.py project [--build-stats OUT/build_stats.json] [--workers 1 8 32 77]

`workers` builds the config once per worker count (DirectRunner multi_processing, the real
command in a child process) and prints wall time, speedup over the first count, each stage's
summed seconds and items/s per worker, and how the workers' time splits between model stages
(training, sampling, features), the other stages, and idle/overhead.

`memory` builds the mini preset from the checkpoints a previous build trained (DIR holds
SOURCE-SEMANTIC.safetensors, e.g. OUT/generators), so no training runs, at each
`sampling.per_model`, and prints the peak RSS of the largest process: the stages stream
chunks, so only the per-cell feature matrix (per_model x 2048 float32) should grow.

`project` puts the full Attribution88 build on paper: it measures on this machine the rates
at protocol settings that the mini preset shrinks (each architecture's sampling at 128 px and
published width, InceptionV3 at 299 px, RepMix selection of one cell at --selection-rows and
scaled linearly to 100k rows), takes the per-image rates of the cheap stages from a mini
build's build_stats.json, and prints the worker-seconds per stage and the wall time on N
workers like this one. Training is left out of the table (its cost is the steps you choose;
the line below it gives seconds per step per architecture): give checkpoints for the protocol.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

MODEL_STAGES = ("train_generators", "sample_generators", "compute_features")
# The full protocol (RepMix, Bui et al. 2022): 7 GANs x 11 semantics, 100k samples each, 12k
# kept per generator, 12k real photos per semantic as the Real class and as references.
PROTOCOL = {"generators": 77, "per_model": 100_000, "kept_per_model": 12_000, "semantics": 11,
            "real_per_semantic": 12_000}
GAN_ARCHS = ("progan", "cramergan", "mmdgan", "sngan", "stylegan", "stylegan2", "stylegan3")


@dataclass
class BuildRun:
    wall: float
    peak_mib: float
    stats: dict
    info: dict


def run_build(config: str, out: Path, extra: list[str]) -> BuildRun:
    """The real build command in a child process; its wall time, peak RSS and stats."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipelines.build_attribution88", "--config", config,
           "--out", str(out), "--quiet", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"build failed with exit code {done.returncode}: {' '.join(cmd)}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("  (peak RSS not above an earlier child's: run one size per process for a clean figure)")
    return BuildRun(wall, peak / 1024, json.loads((out / "build_stats.json").read_text()),
                    json.loads((out / "dataset_info.json").read_text()))


def stage_table(stats: dict) -> dict[str, tuple[float, int]]:
    """Stage -> (seconds summed over workers, items handled), as the build's own summary counts them."""
    from pipelines.progress import stage_summary

    return {row["stage"]: (row["seconds"], row["items"]) for row in stage_summary(stats["metrics"])}


def workers_command(args, extra: list[str]) -> None:
    first = None
    for n in args.workers:
        run = run_build(args.config, Path(args.out) / f"w{n}",
                        [f"--direct_num_workers={n}", "--direct_running_mode=multi_processing", *extra])
        first = first or run.wall
        table = stage_table(run.stats)
        print(f"\n{n} worker(s): wall {run.wall:.0f} s, speedup {first / run.wall:.2f}x, "
              f"peak RSS {run.peak_mib:.0f} MiB, {run.info['samples']} samples")
        print(f"  {'stage':<20} {'seconds':>9} {'items':>8} {'items/s/worker':>15}")
        for stage, (secs, items) in sorted(table.items(), key=lambda kv: -kv[1][0]):
            rate = f"{items / secs:15.1f}" if secs and items else f"{'':>15}"
            print(f"  {stage:<20} {secs:9.1f} {items:8d} {rate}")
        capacity = run.wall * n
        model = sum(table.get(s, (0, 0))[0] for s in MODEL_STAGES)
        other = sum(secs for s, (secs, _) in table.items() if s not in MODEL_STAGES)
        print(f"  worker time {capacity:.0f} s: model stages {100 * model / capacity:.1f}%, "
              f"other stages {100 * other / capacity:.1f}%, idle and overhead "
              f"{100 * (capacity - model - other) / capacity:.1f}%")
        longest = run.stats["metrics"].get("train_generators_ms", 0) / 1000 / max(
            1, run.stats["metrics"].get("generators_trained", 1))
        print(f"  mean training task {longest:.0f} s")


def memory_command(args, extra: list[str]) -> None:
    gens = Path(args.generators)
    checkpoints = sorted(gens.glob("*.safetensors"))
    if not checkpoints:
        raise SystemExit(f"{gens}: no *.safetensors checkpoints (pass a built OUT/generators)")
    sets = [f"sources.{p.stem.split('-', 1)[0]}.checkpoints.{p.stem.split('-', 1)[1]}={p}"
            for p in checkpoints]
    for size in args.sizes:
        # one child per size, so each peak is its own (ru_maxrss only grows)
        cmd = [sys.executable, __file__, "_memory_one", "--config", args.config, "--out",
               str(Path(args.out) / f"m{size}"), "--size", str(size), *extra]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True)


def memory_one(args, extra: list[str]) -> None:
    run = run_build(args.config, Path(args.out),
                    [f"--set=sampling.per_model={args.size}", *[f"--set={s}" for s in args.set], *extra])
    table = stage_table(run.stats)
    trained = run.stats["metrics"].get("generators_trained", 0)
    feature_mib = args.size * 2048 * 4 / 2**20
    print(f"per_model {args.size}: peak RSS {run.peak_mib:.0f} MiB (largest process), wall "
          f"{run.wall:.0f} s, generators trained {trained}, one cell's feature matrix "
          f"{feature_mib:.0f} MiB; sampled {table.get('sample_generators', (0, 0))[1]}")


def _time(fn, repeat: int = 2) -> float:
    fn()  # warm-up: lazy kernels and first allocations
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def protocol_rates(batch: int, selection_rows: int) -> dict[str, float]:
    """Seconds per item at protocol settings, measured here."""
    import numpy as np
    import torch

    from benchmark.features import InceptionFeatures
    from benchmark.selection import select_repmix
    from benchmarks.generator_speed import sampling_rate

    rates = {}
    for arch in GAN_ARCHS:
        rates[f"sample:{arch}"] = 1 / sampling_rate(arch, 128, {}, batch)
        print(f"  sampling {arch} at 128 px: {rates[f'sample:{arch}']:.3f} s/img", flush=True)
    net = InceptionFeatures("random", input_size=299, precision="bf16", batch_size=batch)
    images = np.random.default_rng(0).integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)
    rates["features"] = _time(lambda: net(images)) / batch
    print(f"  InceptionV3 at 299 px (bf16): {rates['features']:.3f} s/img", flush=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, 2048)).astype(np.float32)
    cand = centres[rng.integers(0, 100, selection_rows)] + rng.normal(size=(selection_rows, 2048)).astype(np.float32)
    refs = centres[rng.integers(0, 100, 12_000)] + rng.normal(size=(12_000, 2048)).astype(np.float32)
    keep = min(12_000, selection_rows // 2)
    start = time.perf_counter()
    select_repmix(cand, refs, clusters=100, per_cluster=keep // 100, seed=0)
    rates["selection_per_row"] = (time.perf_counter() - start) / selection_rows
    print(f"  RepMix selection of {selection_rows} rows: {rates['selection_per_row'] * selection_rows:.1f} s "
          f"(x{PROTOCOL['per_model'] / selection_rows:.0f} for a 100k cell, linear in rows)", flush=True)
    del torch
    return rates


def project_command(args, _extra: list[str]) -> None:
    print(f"measuring protocol-setting rates on this machine ({args.threads} torch threads)...")
    import torch

    torch.set_num_threads(args.threads)
    rates = protocol_rates(args.batch, args.selection_rows)
    per_image = {}
    if args.build_stats:
        for stage, (secs, items) in stage_table(json.loads(Path(args.build_stats).read_text())).items():
            if items and stage in ("read_real", "apply_corruptions", "write_shards"):
                per_image[stage] = secs / items
    p = PROTOCOL
    samples = p["generators"] * p["per_model"]
    refs = p["semantics"] * p["real_per_semantic"]
    kept = p["generators"] * p["kept_per_model"] + refs
    work = {
        "sample_generators": p["per_model"] * p["semantics"] * sum(rates[f"sample:{a}"] for a in GAN_ARCHS),
        "compute_features": (samples + refs) * rates["features"],
        "select_by_quality": p["generators"] * p["per_model"] * rates["selection_per_row"],
    }
    if "read_real" in per_image:
        work["read_real"] = 2 * refs * per_image["read_real"]  # Real class and references
    if "apply_corruptions" in per_image:
        work["apply_corruptions"] = kept * per_image["apply_corruptions"]
    if "write_shards" in per_image:
        work["write_shards"] = kept * per_image["write_shards"]
    total = sum(work.values())
    print(f"\nfull protocol: {samples:,} samples, {samples + refs:,} feature rows, "
          f"{p['generators']} selections, {kept:,} written; training not included")
    print("\n| stage | worker-hours | share |")
    print("|---|---:|---:|")
    for stage, secs in sorted(work.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {secs / 3600:,.1f} | {100 * secs / total:.1f}% |")
    print(f"| total | {total / 3600:,.1f} | |")
    print("\n| workers | wall (hours) |")
    print("|---:|---:|")
    for n in args.workers:
        # selections are one task per cell: more workers than cells do not help that stage
        wall = (total - work["select_by_quality"]) / n + work["select_by_quality"] / min(n, p["generators"])
        print(f"| {n} | {wall / 3600:,.1f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("workers")
    w.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    m = sub.add_parser("memory")
    m.add_argument("--generators", required=True, help="folder of SOURCE-SEMANTIC.safetensors")
    m.add_argument("--sizes", nargs="+", type=int, default=[1000, 4000])
    one = sub.add_parser("_memory_one")
    one.add_argument("--size", type=int, required=True)
    one.add_argument("--set", action="append", default=[])
    for s in (w, m, one):
        s.add_argument("--config", default=str(ROOT / "configs" / "mini.yaml"))
        s.add_argument("--out", default="/tmp/a88-scale-out")
    pr = sub.add_parser("project")
    pr.add_argument("--build-stats", help="a mini build's build_stats.json (cheap stages' rates)")
    pr.add_argument("--workers", nargs="+", type=int, default=[1, 8, 32, 77])
    pr.add_argument("--batch", type=int, default=16)
    pr.add_argument("--threads", type=int, default=2)
    pr.add_argument("--selection-rows", type=int, default=20_000)
    args, extra = parser.parse_known_args()
    {"workers": workers_command, "memory": memory_command, "_memory_one": memory_one,
     "project": project_command}[args.command](args, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
