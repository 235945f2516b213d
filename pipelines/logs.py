"""The build's log: one line per event, on every runner, at the level the user asked for.

In the DirectRunner's multi_processing mode each worker is a subprocess that shares our
stderr: Beam's PipelineOptions gives its root logger a stderr handler, and its Fn API log
handler also sends every record back to the runner, which logs it again as "Worker: <proto>".
The worker's own line is the readable one, so the echo is dropped here; and the workers are
told the driver's level, since they otherwise log INFO under --quiet.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# the logger through which Beam's local job service echoes records forwarded by SDK workers
ECHO_LOGGER = "apache_beam.runners.portability.local_job_service"
WORKER_LEVEL_OPTION = "--default_sdk_harness_log_level"


class _DropWorkerEcho(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Worker: "))


def configure(quiet: bool) -> int:
    """Set up the driver's logging; returns the level."""
    level = logging.WARNING if quiet else logging.INFO
    # force: importing Beam already put a handler on the root logger, which would swallow ours.
    logging.basicConfig(level=level, force=True, format=FORMAT)
    echo = logging.getLogger(ECHO_LOGGER)
    if not any(isinstance(f, _DropWorkerEcho) for f in echo.filters):
        echo.addFilter(_DropWorkerEcho())
    return level


def worker_options(beam_args: list[str], level: int) -> list[str]:
    """`beam_args` with the workers' log level set to `level`, unless the user set one."""
    if any(a.split("=")[0] == WORKER_LEVEL_OPTION for a in beam_args):
        return list(beam_args)
    return [*beam_args, f"{WORKER_LEVEL_OPTION}={logging.getLevelName(level)}"]
