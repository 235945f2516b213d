"""What the stages count and time: Beam metrics, and progress records the driver reads live.

The driver reads the Beam metrics back after the run (the per-stage time split, and the check
that no stage lost or doubled elements). Runners only report metrics at the end, and the
DaskRunner not at all, so a `Meter` with a progress folder also appends small JSON lines
there, one file per worker process; `pipelines.progress` tails them while the pipeline runs.
The folder must be one the workers share with the driver, as the staging folder already is.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from apache_beam.metrics import Metrics

NAMESPACE = "attribution88"
FLUSH_SECONDS = 1.0  # a training step or a tiny chunk is not worth a line of its own


@dataclass(frozen=True)
class Meter:
    progress_dir: str | None = None  # None: Beam metrics only

    def count(self, name: str, n: int = 1) -> None:
        Metrics.counter(NAMESPACE, name).inc(n)
        if self.progress_dir:
            _records(self.progress_dir).add(name, n)

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block, in ms, to the `<stage>_ms` counter."""
        start = time.perf_counter()
        try:
            yield
        finally:
            ms = int((time.perf_counter() - start) * 1000)
            Metrics.counter(NAMESPACE, f"{stage}_ms").inc(ms)
            if self.progress_dir:
                records = _records(self.progress_dir)
                records.add(f"{stage}_ms", ms)
                records.flush()


class _Records:
    """This process's pending progress counts, appended to its own file at most once a second,
    by the caller or, for counts nothing follows, by a daemon thread (a Dask worker lives on
    after its last task, and its last counts must still arrive)."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, f"{socket.gethostname()}-{os.getpid()}.jsonl")
        self.pending: dict[str, int] = {}
        self.last = 0.0
        self.lock = threading.Lock()
        threading.Thread(target=self._flush_forever, name="a88-progress-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()

    def add(self, name: str, n: int) -> None:
        with self.lock:
            self.pending[name] = self.pending.get(name, 0) + n
        if time.monotonic() - self.last >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            if not self.pending:
                return
            line = json.dumps({"t": round(time.time(), 3), **self.pending}, sort_keys=True) + "\n"
            self.pending = {}
            self.last = time.monotonic()
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                # one O_APPEND write per line: whole lines, whatever else writes the file
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError:
                pass  # progress is a view; a failed write must not fail the build


_OPEN: dict[tuple[str, int], _Records] = {}


def _records(folder: str) -> _Records:
    key = (folder, os.getpid())  # a forked worker starts its own file
    if key not in _OPEN:
        _OPEN[key] = _Records(folder)
    return _OPEN[key]


def flush_all() -> None:
    """Write every pending count of this process (the driver calls it for in-process workers)."""
    for (_, pid), records in list(_OPEN.items()):
        if pid == os.getpid():
            records.flush()


# The default meter, for stages built without a progress folder (tests, TestPipeline).
METER = Meter()
