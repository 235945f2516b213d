"""Beam metrics shared by the stages: element counts and time spent per stage.

The driver reads them back after the run to print the per-stage time split and to check that
no stage lost or doubled elements.
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

from apache_beam.metrics import Metrics

NAMESPACE = "attribution88"


def counter(name: str):
    return Metrics.counter(NAMESPACE, name)


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    """Add the wall time of the block, in ms, to the `<stage>_ms` counter."""
    start = time.perf_counter()
    try:
        yield
    finally:
        Metrics.counter(NAMESPACE, f"{stage}_ms").inc(int((time.perf_counter() - start) * 1000))
