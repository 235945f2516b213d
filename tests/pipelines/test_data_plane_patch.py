"""The FnApiRunner data-plane race (pipelines.data_plane_patch): in the stream, in a pipeline,
and the patch that removes it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.coders.coder_impl import create_InputStream, create_OutputStream
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers
from apache_beam.runners.worker import data_plane

from pipelines import data_plane_patch


def test_beams_time_based_stream_clears_what_is_written_while_a_flush_waits():
    """The upstream race itself. If this fails, Beam changed its stream: check whether the
    race is gone, and drop pipelines/data_plane_patch.py if it is."""
    sent: list[bytes] = []
    flushing, release = threading.Event(), threading.Event()

    def flush_callback(data: bytes) -> None:
        sent.append(data)
        if data:  # a full send queue: the flush waits here, between copy and clear
            flushing.set()
            release.wait(10)

    out = data_plane.TimeBasedBufferingClosableOutputStream(
        sent.append, flush_callback=flush_callback, time_flush_threshold_ms=20)
    out.write(b"a" * 10)
    assert flushing.wait(10)
    out.write(b"b" * 10)  # the runner's thread goes on writing the bundle
    release.set()
    out.close()  # waits for the periodic flush, which clears the b's
    assert b"".join(sent) == b"a" * 10


def test_a_size_based_stream_sends_everything_on_close():
    sent: list[bytes] = []
    out = data_plane.ClosableOutputStream.create(sent.append, sent.append, 0)
    out.write(b"a" * 10)
    time.sleep(0.05)
    out.write(b"b" * 10)
    out.close()
    assert b"".join(sent) == b"a" * 10 + b"b" * 10


def test_apply_makes_the_runner_streams_size_based(monkeypatch):
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    data_plane_patch.apply()
    data_plane_patch.apply()  # idempotent
    assert worker_handlers.DATA_BUFFER_TIME_LIMIT_MS == 0


def test_apply_refuses_a_beam_without_the_setting(monkeypatch):
    monkeypatch.delattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS")
    with pytest.raises(RuntimeError, match="DATA_BUFFER_TIME_LIMIT_MS"):
        data_plane_patch.apply()


# --- in a pipeline: the DirectRunner with 2 worker processes, its data plane slowed down ------

N = 60


@pytest.fixture
def slow_data_plane(monkeypatch):
    """What a build of several hundred MB per bundle does, at the size of a test: the send queue
    is full for a while (each message waits 0.4 s), and the runner writes a bundle's input for
    longer than the 1 s flush period (0.05 s per element). Only the runner side (this process)
    is slowed; the workers are untouched."""
    enqueue = data_plane._GrpcDataChannel._enqueue_to_send

    def slow_enqueue(self, elem):
        if getattr(elem, "data", b""):
            time.sleep(0.4)
        enqueue(self, elem)

    send = fn_runner.BundleManager._send_input_to_worker

    def slow_send(self, process_bundle_id, transform_id, byte_streams):
        coder = self.bundle_context_manager.get_input_coder_impl(transform_id)

        def one_element_at_a_time():
            for blob in byte_streams or []:
                stream = create_InputStream(blob)
                while stream.size() > 0:
                    out = create_OutputStream()
                    coder.encode_to_stream(coder.decode_from_stream(stream, True), out, True)
                    time.sleep(0.05)
                    yield out.get()

        send(self, process_bundle_id, transform_id, one_element_at_a_time())

    monkeypatch.setattr(data_plane._GrpcDataChannel, "_enqueue_to_send", slow_enqueue)
    monkeypatch.setattr(fn_runner.BundleManager, "_send_input_to_worker", slow_send)
    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)  # Beam's default


def _count_through_a_second_stage() -> int:
    """Elements made in one stage, handed to the next as a materialized PCollection (the
    Flatten with a second source makes the boundary, as sampled chunks meet reference photos
    in the build), counted there."""
    options = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    seen = beam.metrics.Metrics.counter("test", "seen")

    def count(x):
        seen.inc()
        return x

    p = beam.Pipeline(options=options)
    made = p | "Made" >> beam.Create(range(N)) | "Payload" >> beam.Map(lambda i: (i, b"x" * 1000))
    other = p | "Other" >> beam.Create([(-1, b"")])
    _ = (made, other) | beam.Flatten() | "Count" >> beam.Map(count)
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name("seen"))["counters"]
    return sum(c.committed for c in counters)


def test_without_the_patch_a_slow_data_plane_loses_elements(slow_data_plane):
    assert _count_through_a_second_stage() < N + 1


def test_with_the_patch_every_element_arrives(slow_data_plane):
    data_plane_patch.apply()
    assert _count_through_a_second_stage() == N + 1


def test_the_job_service_refuses_background_mode():
    proc = subprocess.run([sys.executable, "-m", "pipelines.job_service", "--background"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--background is not supported" in proc.stderr


def test_the_job_service_patches_its_runner_before_serving(monkeypatch):
    from apache_beam.runners.portability import local_job_service_main

    from pipelines import job_service

    monkeypatch.setattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 1000)
    monkeypatch.setattr("signal.signal", lambda *_: None)
    served = []
    monkeypatch.setattr(local_job_service_main, "run",
                        lambda argv: served.append((argv, worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)))
    assert job_service.main(["--port", "0", "--port_file", "f"]) == 0
    assert served == [(["--port", "0", "--port_file", "f"], 0)]
