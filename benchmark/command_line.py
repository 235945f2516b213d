"""The argparse parser every command of the tool starts from.

Each entry point's main(argv, prog) takes the name it runs under: its module form
("python -m eval.train") when run directly, "a88 train" when the a88 command dispatches to it
(pipelines/a88.py). Help and usage then show the name the user typed, and the "Example:"
section at the end of --help is written with that same name, so it can be copied as is.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def command_parser(prog: str, description: str, examples: Sequence[str],
                   note: str = "") -> argparse.ArgumentParser:
    """A parser for `prog` whose help ends with `note` (if any) and one line per example, each
    example being the arguments after the command's name."""
    if not examples:
        raise ValueError(f"{prog}: a command's help needs at least one example")
    lines = [note, ""] if note else []
    lines.append("Example:" if len(examples) == 1 else "Examples:")
    lines += [f"  {prog} {example}" for example in examples]
    # Raw: keep the example lines (and the description's own line breaks) as written.
    return argparse.ArgumentParser(prog=prog, description=description, epilog="\n".join(lines),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
