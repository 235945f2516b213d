"""Verify a built benchmark folder (`a88 verify OUT`, or `python -m pipelines.verify OUT`).

    python -m pipelines.verify OUT [--workers N] [--json REPORT.json] [--show 50]

Re-reads every tar, recomputes each PNG's sha256 against the manifest, decodes every image at
the build's resolution, and checks the counts per (class, semantic, split) and dataset_info.json
against the files (benchmark/verify.py lists every check). Prints each missing, extra, changed or
misplaced sample by key (the first --show of them; --json writes all), then a summary with the
images/s it read at.

Exit status: 0 when the folder is exactly what its records say, 1 when a problem was found,
2 when the folder is not a benchmark verify can read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tqdm import tqdm

from benchmark.atomic import write_text
from benchmark.command_line import command_parser
from benchmark.verify import VerifyError, verify

PROG = "python -m pipelines.verify"  # the name in --help; a88 passes its own


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n\n")[0],
                            ["out/mini --workers 2 --json verify.json"])
    parser.add_argument("folder", type=Path, help="a built benchmark folder")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes reading tars in parallel (default: one per core)")
    parser.add_argument("--json", type=Path, help="write the whole report here")
    parser.add_argument("--show", type=int, default=50, help="problems printed (default 50)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.show < 0:
        parser.error(f"--show must be >= 0, got {args.show}")
    return args


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    bar = tqdm(unit="shard", desc="verify", disable=not sys.stderr.isatty(), dynamic_ncols=True)

    def progress(done: int, total: int, images: int) -> None:
        bar.total = total
        bar.update(done - bar.n)
        bar.set_postfix(images=images)

    try:
        report = verify(args.folder, workers=args.workers, progress=progress)
    except VerifyError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    for problem in report.problems[:args.show]:
        print(problem)
    if len(report.problems) > args.show:
        print(f"... and {len(report.problems) - args.show} more"
              + (f" (all in {args.json})" if args.json else " (--json writes them all)"))
    if args.json:
        write_text(args.json, json.dumps(report.to_json(), indent=2) + "\n")
    summary = (f"{args.folder}: {report.samples} samples in {report.shards} shards, "
               f"{report.images_read} images read in {report.seconds:.1f} s "
               f"({report.images_per_s:.0f} img/s, {args.workers} worker(s))")
    if report.ok:
        print(f"OK {summary}")
        return 0
    counts = ", ".join(f"{n} {kind}" for kind, n in report.counts().items())
    print(f"FAILED {summary}: {counts}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
