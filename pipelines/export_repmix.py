"""Extract a built benchmark's images as files for the released RepMix code.

    python -m pipelines.export_repmix OUT [--split test|val|train|all] [--dest DIR]

Writes DIR/SPLIT/KEY.png (DIR: OUT/repmix, beside the CSVs) for every row of
OUT/repmix/SPLIT.csv, each checked against the manifest's sha256; a rerun writes nothing new.
Then, in a clone of TuBui/image_attribution:

    python train.py -d DIR -tl OUT/repmix/train.csv -vl OUT/repmix/val.csv -o runs/repmix
    python test.py -d DIR -l OUT/repmix/test.csv -w runs/repmix/last.ckpt

The logic is in benchmark/repmix.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark import protocol
from benchmark.command_line import command_parser
from benchmark.repmix import CSV_FOLDER, ExportError, export_split


PROG = "python -m pipelines.export_repmix"  # the name in --help; a88 passes its own


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n\n")[0], ["out/mini --split test"])
    parser.add_argument("out", type=Path, help="a built benchmark folder")
    parser.add_argument("--split", default="all", choices=(*protocol.SPLIT_NAMES, "all"),
                        help="the split to extract (default: all)")
    parser.add_argument("--dest", type=Path,
                        help=f"where SPLIT/KEY.png go (default: OUT/{CSV_FOLDER}); pass it to "
                             "train.py / test.py as -d")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    splits = protocol.SPLIT_NAMES if args.split == "all" else (args.split,)
    try:
        for split in splits:
            stats = export_split(args.out, split, args.dest)
            print(f"{split}: {stats.written} written, {stats.present} already there, in {stats.folder}")
    except ExportError as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
