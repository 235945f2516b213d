"""The same build on every runner that runs here gives the same bytes as the DirectRunner.

The reference is test_build_e2e's `built`: the DirectRunner in memory (its default mode).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers

from pipelines.build_attribution88 import BuildError, _resolve_device, _workers_are_here, main
from pipelines.compute import ComputeSettings
from tests.pipelines.test_build_e2e import _tar_bytes, built, photo_config  # noqa: F401 (fixtures)

# the card, its figures and the Croissant file too: nothing in them may name the runner
COMPARED = ("manifest.parquet", "rejections.parquet", "dataset_info.json", "README.md",
            "croissant.json", "samples-test.png", "selection-distances.png")


@contextlib.contextmanager
def portable_job_service(folder: Path, timeout: float = 60.0) -> Iterator[str]:
    """Beam's Python job service in a subprocess; yields its endpoint, stops it on exit.

    Port 0 lets the OS pick a free port; the service writes it to --port_file (by rename, so
    never half-written) only once its gRPC server is up, so the file's presence means it listens.
    """
    port_file = folder / "job_service.port"
    log_path = folder / "job_service.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m",
                                 "pipelines.job_service",
                                 "--port", "0", "--port_file", str(port_file)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the job service exited with {proc.returncode}:\n"
                                   f"{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job service did not listen within {timeout:.0f} s:\n"
                                   f"{log_path.read_text()}")
            time.sleep(0.1)
        yield f"localhost:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def job_endpoint(tmp_path_factory) -> Iterator[str]:
    with portable_job_service(tmp_path_factory.mktemp("job_service")) as endpoint:
        yield endpoint


@contextlib.contextmanager
def runner_flags(runner: str, request) -> Iterator[list[str]]:
    """Beam options for `runner`, with whatever service it needs up while the build runs."""
    if runner == "multi_processing":
        yield ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    elif runner == "portable":
        yield ["--runner", "PortableRunner", "--job_endpoint", request.getfixturevalue("job_endpoint"),
               "--environment_type", "LOOPBACK"]
    elif runner == "dask":
        distributed = pytest.importorskip("distributed")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, distributed.Client(cluster):
            yield ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner",
                   f"--dask_client_address={cluster.scheduler_address}"]
    else:
        raise ValueError(runner)


@pytest.mark.parametrize("runner", ["multi_processing", "portable", "dask"])
def test_every_runner_builds_the_same_bytes_as_the_direct_runner(runner, request, photo_config,  # noqa: F811
                                                                 built, capfd, monkeypatch):  # noqa: F811
    out = photo_config.parent / f"runner-{runner}"
    # Beam's default, whatever an earlier build in this process did: the build must patch it
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    # multi_processing runs with its log on: its workers are subprocesses sharing our stderr
    quiet = [] if runner == "multi_processing" else ["--quiet"]
    with runner_flags(runner, request) as flags:
        code = main(["--config", str(photo_config), "--out", str(out), *quiet, *flags])
    assert code == 0
    tars = _tar_bytes(out)
    assert len(tars) == 8 and tars == _tar_bytes(built)
    for name in COMPARED:
        assert (out / name).read_bytes() == (built / name).read_bytes(), name
    stats = json.loads((out / "build_stats.json").read_text())
    if runner != "dask":  # the DaskRunner reports no metrics; the others feed build_stats.json
        assert (stats["metrics"]["written"], stats["metrics"]["real_rejected"]) == (40, 1)
    # the stage summary comes from the workers' progress records where metrics are missing
    stages = {row["stage"]: row["items"] for row in stats["stages"]}
    assert (stages["sample_generators"], stages["write_shards"]) == (48, 40), stages
    assert not (out / "progress").exists()
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0  # pipelines.data_plane_patch
    if runner == "multi_processing":
        captured = capfd.readouterr()
        assert captured.err.count("sampled sngan-faces-c000000: samples 0..7") == 1  # not echoed
        assert "sampling: 48/48 images (100%)" in captured.err  # the driver's progress line
        assert "sample_generators" in captured.out.split("stage time summed over workers")[1]


def test_a_worker_input_error_on_the_portable_runner_is_one_clear_line(photo_config, job_endpoint,  # noqa: F811
                                                                       capsys):
    """The PortableRunner hands back the worker's whole traceback as text; the driver still
    prints only the message naming the semantic (it printed the traceback chain before)."""
    root = photo_config.parent / "short"
    faces = photo_config.parent / "photos" / "faces"
    (root / "faces").mkdir(parents=True)
    for i, photo in enumerate(sorted(faces.iterdir())):
        # 30 of 40 undecodable: the listing fills the plan, decoding leaves 9 for 10 Real slots
        data = b"\xff\xd8\xff\xe0 truncated" if i < 30 else photo.read_bytes()
        (root / "faces" / photo.name).write_bytes(data)
    out = root / "out"
    code = main(["--config", str(photo_config), "--out", str(out), "--quiet",
                 "--set", f"semantics.faces.path={root / 'faces'}",
                 "--runner", "PortableRunner", "--job_endpoint", job_endpoint,
                 "--environment_type", "LOOPBACK"])
    assert code == 1
    err = capsys.readouterr().err  # Beam's own error log with tracebacks comes first
    assert err[err.index("build failed"):] == (
        "build failed: semantics.faces.path: only 9 of the Real-class candidate photos decoded, "
        "the Real class needs 10; rejections.parquet in the partial output lists the files that "
        "failed\n")
    assert not out.exists()


@pytest.mark.parametrize("flags, here", [
    ([], True),
    (["--direct_num_workers=2", "--direct_running_mode=multi_processing"], True),
    (["--runner=direct"], True),
    (["--runner", "PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=LOOPBACK"], True),
    (["--runner", "PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=DOCKER"], False),
    (["--runner", "FlinkRunner", "--flink_master=flink:8081", "--environment_type=PROCESS"], False),
    (["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner"], False),
    (["--runner", "DataflowRunner"], False),
])
def test_which_runners_put_the_workers_on_the_launching_machine(flags, here):
    assert _workers_are_here(PipelineOptions(flags)) is here


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_launcher_without_gpu_is_refused_here_and_left_to_workers_elsewhere():
    """A cluster's GPUs are on its workers: the launcher cannot refuse `cuda` for them, and
    `auto` would silently pick the launcher's CPU. A worker without CUDA fails in setup."""
    with pytest.raises(BuildError, match="runtime.device is cuda but no CUDA device is visible"):
        _resolve_device("cuda", workers_here=True)
    assert _resolve_device("cuda", workers_here=False) == "cuda"
    assert _resolve_device("auto", workers_here=False) == "cpu"
    with pytest.raises(RuntimeError, match="runtime.device is cuda but this worker sees no CUDA device"):
        ComputeSettings("cuda", 1).apply()
