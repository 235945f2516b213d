"""A test-only fault hook: kill this process at a chosen point, as a crash or the OOM killer would.

    A88_FAULT=sample_generators:3   SIGKILL once the 3rd sampled chunk is stored in the cache
    A88_FAULT=compute_features:2    SIGKILL once the 2nd feature batch is stored in the cache
    A88_FAULT=write_shards:2        SIGKILL while the 2nd shard is written (before its rename)

The resume tests use it to kill a real build where they choose. Unset (always, outside tests)
it does nothing. Counts are per process: with several worker processes each counts its own.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "A88_FAULT"
STAGES = ("sample_generators", "compute_features", "write_shards")
_reached: Counter[str] = Counter()


def fault_point(stage: str) -> None:
    """Count one pass of `stage`; SIGKILL this process on the pass A88_FAULT names."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name not in STAGES or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{ENV}={spec!r}: expected STAGE:N with STAGE one of {', '.join(STAGES)} "
                         "and N >= 1 (a test-only fault hook; unset it for a real build)")
    if name != stage:
        return
    _reached[stage] += 1
    if _reached[stage] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
