"""Score a submission against a built benchmark: `python eval/score.py`.

    python eval/score.py --benchmark out/mini --submission preds.csv [--split test]
        [--out report.json] [--bootstrap 1000] [--seed 0]
        [--leaderboard DIR --name NAME [--replace]]

The truth is the benchmark's manifest. The report gives the headline figures (attribution
accuracy, NMI, detection accuracy) with 95% percentile-bootstrap intervals and chance levels;
balanced accuracy, per-class precision/recall/F1 and the confusion matrix; the breakdowns by
seen/unseen semantic, by seen/unseen corruption, clean vs corrupted and per corruption x
severity; and, when the submission has score columns, ROC-AUCs and the decentralised reading
(eval/scoring/scores.py). The JSON report goes to stdout. With --out FILE.json it is also written
there, beside a Markdown summary FILE.md and two figures FILE.confusion.png and
FILE.corruption.png. With --leaderboard, the entry is added to DIR/leaderboard.json and
DIR/leaderboard.md.

A malformed submission, or an entry the leaderboard refuses, exits with code 2 and a message
naming the row, column or reason; nothing is written, since every output is computed before
the first is written (each one atomically).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.atomic import write_bytes  # noqa: E402
from benchmark.command_line import command_parser  # noqa: E402
from eval.benchmark_folder import BenchmarkError, open_benchmark  # noqa: E402
from eval.scoring import leaderboard  # noqa: E402
from eval.scoring.report import render_outputs, report_json, score  # noqa: E402
from eval.scoring.submission import SubmissionError  # noqa: E402

# What callers import from here (tests, notebooks): the CLI and the scoring function.
__all__ = ["BenchmarkError", "main", "score"]


PROG = "python eval/score.py"  # the name in --help; a88 passes its own


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n\n")[0], [
        "--benchmark out/mini --submission preds.csv --out report.json",
        "--benchmark out/mini --submission preds.csv --leaderboard board/ --name repmix-seed0"])
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--submission", required=True, type=Path,
                        help="CSV or Parquet: key, pred, optionally score_<class> for every class "
                             "and fake_score")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path,
                        help="write the JSON report here, and FILE.md, FILE.confusion.png, "
                             "FILE.corruption.png beside it")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                        help="bootstrap resamples for the 95%% intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--leaderboard", type=Path, metavar="DIR",
                        help="add the entry to DIR/leaderboard.json and DIR/leaderboard.md")
    parser.add_argument("--name", help="the entry's name on the leaderboard")
    parser.add_argument("--replace", action="store_true",
                        help="replace a leaderboard entry of the same name")
    args = parser.parse_args(argv)
    if args.leaderboard and not args.name:
        parser.error("--leaderboard needs --name")
    if args.bootstrap < 0:
        parser.error("--bootstrap must be 0 or more")
    return args


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    try:
        folder = open_benchmark(args.benchmark)
        report = score(folder, args.submission, args.split, args.bootstrap, args.seed)
        if args.leaderboard:
            date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            entry = leaderboard.entry_from_report(report, args.name, date)
            # read, add and rewrite under the board's lock: a concurrent scorer's entry survives
            leaderboard.update(args.leaderboard, entry, args.replace)
    except (SubmissionError, BenchmarkError, leaderboard.LeaderboardError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = render_outputs(report, args.out) if args.out else {}
    for path, data in files.items():
        write_bytes(path, data)
    sys.stdout.write(report_json(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
