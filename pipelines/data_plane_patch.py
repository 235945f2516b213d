"""Work around a race in Beam's FnApiRunner data plane that silently drops elements.

Beam's Python runner (the DirectRunner in `multi_processing` mode, and the Python job service
behind the PortableRunner) sends a bundle's input to a gRPC worker through an output stream
with a time-based flush: a thread flushes the buffer every DATA_BUFFER_TIME_LIMIT_MS (1 s).
That flush copies the buffer, hands the copy to the send queue and then clears the buffer,
while the runner's own thread keeps writing into it without the flush lock. Whatever the
runner writes while the send queue blocks (it holds 100 MB, a large bundle is several hundred)
is cleared without being sent, and the worker sees the bundle end early: no error, fewer
elements. Beam 2.77; tests/pipelines/test_data_plane_patch.py shows the race in the stream
itself, and a pipeline that loses elements without this patch.

The runner writes a bundle's whole input before it sends the request to process it, so a
periodic flush gains nothing on that side. With the limit at 0 Beam makes size-based streams,
which flush only on close: one message per bundle, nothing written after a flush.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_PATCHED_FOR = "2.77."  # the Beam line whose code this was checked against


def apply() -> None:
    """Make the in-process FnApiRunner's data streams size-based. Call before the runner starts
    its gRPC servers, i.e. before Pipeline.run; idempotent."""
    import apache_beam
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
        raise RuntimeError(
            f"apache_beam {apache_beam.__version__} has no worker_handlers.DATA_BUFFER_TIME_LIMIT_MS; "
            "check pipelines/data_plane_patch.py against this version before running a build")
    if not apache_beam.__version__.startswith(_PATCHED_FOR):
        log.warning("pipelines.data_plane_patch was checked against Beam %sx, this is %s",
                    _PATCHED_FOR, apache_beam.__version__)
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
