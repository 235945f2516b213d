"""`python -m pipelines.job_service`: Beam's Python job service, for the PortableRunner.

Beam's own (`apache_beam.runners.portability.local_job_service_main`) runs the FnApiRunner,
whose data plane drops elements of large bundles (see pipelines.data_plane_patch). This one is
the same service with the patch applied in its process, where the runner runs. Same flags as
Beam's (--port, --port_file, --pid_file, --staging_dir), except --background and --stop: a
service started in the background would be Beam's, unpatched.
"""

from __future__ import annotations

import logging
import signal
import sys

from pipelines import data_plane_patch


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    refused = [a for a in args if a in ("--background", "--stop")]
    if refused:
        print(f"pipelines.job_service: {refused[0]} is not supported (it would start Beam's "
              "unpatched service); run this one under your own supervisor", file=sys.stderr)
        return 2
    data_plane_patch.apply()
    from apache_beam.runners.portability import local_job_service_main

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(level=logging.INFO)
    local_job_service_main.run(args or ["--port", "0"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
