"""The `a88` command: every entry point of the tool under one name.

    a88 build --config configs/mini.yaml --out out/mini
    a88 generators train --arch sngan --images photos/ --out ckpt/sngan_cat --steps 2000

Each subcommand is an existing module's main(argv, prog); a88 imports that module only when it
dispatches to it (so `a88 --help` loads neither torch nor Beam) and hands it every argument after
the subcommand's name unchanged: its own --help, Beam pipeline options for build. The module forms
keep working (`python -m pipelines.build_attribution88`, `python eval/score.py`, ...).

This module lives in pipelines/, the room the design card gives the command-line entry points,
because the card fixes the top-level packages (benchmark, generators, pipelines, eval): the
console script points here rather than at a fifth, `a88`, package. It imports nothing from the
rooms at load time, so it adds no dependency between them. `python -m pipelines.a88` runs it
from a checkout without installing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmark import __version__


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose main(argv, prog) runs it."""

    module: str  # imported on dispatch, never before
    summary: str  # its line in the parent's --help


@dataclass(frozen=True)
class Group:
    """A subcommand with subcommands of its own (`a88 generators train`)."""

    summary: str
    commands: Mapping[str, Command]
    example: str  # arguments after the group's name, for its --help


# A new entry point joins here (and in the README's command table).
COMMANDS: Mapping[str, Command | Group] = {
    "build": Command("pipelines.build_attribution88", "build a benchmark (a Beam pipeline)"),
    "verify": Command("pipelines.verify", "check a built benchmark against its manifest"),
    "export": Command("pipelines.export_repmix", "write a benchmark's images for the released "
                                                 "RepMix code"),
    "train": Command("eval.train", "train an attribution model (RepMix or a baseline)"),
    "predict": Command("eval.predict", "predict a split with a trained run: a submission"),
    "score": Command("eval.score", "score a submission; optionally add it to a leaderboard"),
    "attack": Command("eval.attack", "adversarial robustness (I-FGSM) of a trained run"),
    "generators": Group(
        "train a generator, or convert another project's checkpoint",
        {"train": Command("generators.cli", "train a generator from scratch on a folder of photos"),
         "convert": Command("generators.convert", "convert another project's generator file "
                                                  "into our checkpoint format")},
        "train --arch sngan --images photos/ --out ckpt/sngan_cat --steps 2000"),
}

DESCRIPTION = ("Build synthetic-image attribution benchmarks (the Attribution88 protocol of "
               "RepMix), train and\nevaluate attribution models on them, and score submissions.")


def _parser(prog: str, description: str, commands: Mapping[str, Command | Group], example: str,
            top: bool) -> argparse.ArgumentParser:
    width = max(map(len, commands))
    table = "\n".join(f"  {name:<{width}}  {c.summary}" for name, c in commands.items())
    epilog = (f"Run `{prog} COMMAND --help` for a command's options and an example.\n\n"
              f"Example:\n  {prog} {example}")
    parser = argparse.ArgumentParser(prog=prog, description=f"{description}\n\ncommands:\n{table}",
                                     epilog=epilog,
                                     usage="%(prog)s [-h]" + (" [--version]" if top else "")
                                     + " COMMAND [ARGS ...]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if top:
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # listed in the description's table, with a line each
    parser.add_argument("command", metavar="COMMAND", choices=list(commands), help=argparse.SUPPRESS)
    return parser


def _dispatch(prog: str, description: str, commands: Mapping[str, Command | Group], example: str,
              argv: Sequence[str], top: bool = False) -> int:
    parser = _parser(prog, description, commands, example, top)
    # Our options (-h, --version) come before the subcommand's name; all after it is the
    # subcommand's, so it is cut off here rather than parsed (argparse would take its --help).
    at = next((i for i, arg in enumerate(argv) if not arg.startswith("-")), len(argv))
    name = parser.parse_args(argv[:at + 1]).command
    target, rest = commands[name], list(argv[at + 1:])
    if isinstance(target, Group):
        return _dispatch(f"{prog} {name}", target.summary[0].upper() + target.summary[1:] + ".",
                         target.commands, target.example, rest)
    return importlib.import_module(target.module).main(rest, prog=f"{prog} {name}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `a88 ARGV...`; returns the subcommand's exit status (argparse exits 2 on bad usage)."""
    argv = sys.argv[1:] if argv is None else argv
    return _dispatch("a88", DESCRIPTION, COMMANDS, "build --config configs/mini.yaml --out out/mini",
                     argv, top=True)


if __name__ == "__main__":
    sys.exit(main())
