"""Does Beam's Python runner deliver every element of a large bundle? (pipelines.data_plane_patch)

    python benchmarks/data_plane_loss.py [--elements 2400] [--kb 500] [--workers 2]
                                         [--mode multi_processing|in_memory|portable] [--patch]

A Beam-only pipeline, none of the build's code: `--elements` payloads of `--kb` KB are made in
one stage and flattened with a second source into a stage that counts them (the build's sampled
chunks meet its reference photos the same way). Prints how many arrived. `portable` starts
Beam's job service (with --patch, ours: pipelines.job_service) and runs the PortableRunner with
`--sdk_worker_parallelism=--workers`. Without --patch, 1.2 GB on 2 workers lost elements in
every run we made; see the README.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere


def _payload(i: int, size: int) -> tuple[int, bytes]:
    return i, i.to_bytes(4, "big") * (size // 4)


def run(elements: int, size: int, options: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    arrived = beam.metrics.Metrics.counter("data_plane_loss", "arrived")

    def count(x):
        arrived.inc()
        return x

    p = beam.Pipeline(options=PipelineOptions(options))
    made = (p | "Indices" >> beam.Create(range(elements)) | "Spread" >> beam.Reshuffle()
            | "Payloads" >> beam.Map(_payload, size))
    other = p | "Other" >> beam.Create([(-1, b"")])
    _ = (made, other) | "Meet" >> beam.Flatten() | "Count" >> beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    query = result.metrics().query(beam.metrics.MetricsFilter().with_name("arrived"))
    return sum(c.committed for c in query["counters"]) - 1  # less the second source's element


def _job_service(folder: Path, patched: bool) -> tuple[subprocess.Popen, str]:
    module = "pipelines.job_service" if patched else "apache_beam.runners.portability.local_job_service_main"
    port_file = folder / "port"
    proc = subprocess.Popen([sys.executable, "-m", module, "--port", "0", "--port_file", str(port_file)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not port_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"{module} exited with {proc.returncode}")
        time.sleep(0.1)
    return proc, f"localhost:{port_file.read_text().strip()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=2400)
    parser.add_argument("--kb", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=["multi_processing", "in_memory", "portable"],
                        default="multi_processing")
    parser.add_argument("--patch", action="store_true", help="apply pipelines.data_plane_patch")
    args = parser.parse_args()
    if args.patch:
        from pipelines import data_plane_patch

        data_plane_patch.apply()
    service = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.mode == "portable":
            service, endpoint = _job_service(Path(tmp), args.patch)
            options = ["--runner", "PortableRunner", "--job_endpoint", endpoint,
                       "--environment_type", "LOOPBACK", f"--sdk_worker_parallelism={args.workers}"]
        else:
            options = [f"--direct_num_workers={args.workers}", f"--direct_running_mode={args.mode}"]
        try:
            start = time.perf_counter()
            got = run(args.elements, args.kb * 1000, options)
            wall = time.perf_counter() - start
        finally:
            if service is not None:
                service.terminate()
                service.wait()
    total_gb = args.elements * args.kb / 1e6
    print(f"{args.mode}, {args.workers} workers, {'patched' if args.patch else 'Beam as is'}: "
          f"{got} of {args.elements} elements arrived ({100 * (args.elements - got) / args.elements:.1f}% "
          f"lost), {total_gb:.2f} GB through the stage, {wall:.0f} s")


if __name__ == "__main__":
    main()
