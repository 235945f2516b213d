"""A leaderboard folder: leaderboard.json (the record) and leaderboard.md (the ranked table).

A leaderboard belongs to one benchmark build and split: its first entry fixes the manifest's
sha256 and the split, and a later entry from another build or split is refused, since its
figures would not be comparable. Names are unique; an entry with a name already there is
refused unless `replace` is given, which swaps the old entry for the new one. Entries are
ranked by attribution accuracy, ties broken by NMI, then by name (so the order is total).
Both files are rewritten atomically, JSON first (the Markdown is derived from it).

Two scorers may add entries to one folder at the same moment (a grid of runs finishing
together): `update` holds a lock file beside the board (filelock: an OS lock, released when the
process dies) across read, add and rewrite, so neither entry is lost.
"""

from __future__ import annotations

import json
from pathlib import Path

from filelock import FileLock, Timeout

from benchmark.atomic import write_text
from eval.scoring.metrics import HEADLINE

JSON_NAME = "leaderboard.json"
MD_NAME = "leaderboard.md"
LOCK_NAME = ".leaderboard.lock"
LOCK_TIMEOUT_S = 120.0


class LeaderboardError(ValueError):
    """An entry that cannot join this leaderboard, or a leaderboard file that cannot be read."""


def entry_from_report(report: dict, name: str, date: str) -> dict:
    """The leaderboard's record of one scored submission."""
    if not name.strip() or "|" in name or "\n" in name:
        raise LeaderboardError(f"--name {name!r}: give a non-empty name without '|' or newlines")
    ci = report.get("ci")
    return {
        "name": name, "date": date, "split": report["split"], "count": report["count"],
        "submission_sha256": report["submission"]["sha256"],
        "benchmark_hash": report["benchmark"]["manifest_sha256"],
        **{m: {"value": report[m], "ci": ci[m] if ci else None} for m in HEADLINE},
    }


def load(folder: Path) -> dict | None:
    """The leaderboard in `folder`, or None where there is none yet."""
    path = Path(folder) / JSON_NAME
    if not path.exists():
        return None
    try:
        board = json.loads(path.read_text())
        if not isinstance(board.get("entries"), list) or "benchmark_hash" not in board:
            raise ValueError("no entries list or benchmark_hash")
    except (ValueError, AttributeError) as exc:
        raise LeaderboardError(f"{path}: not a leaderboard file ({exc})") from None
    return board


def _rank_key(entry: dict) -> tuple:
    return (-entry["attribution_accuracy"]["value"], -entry["nmi"]["value"], entry["name"])


def add_entry(board: dict | None, entry: dict, replace: bool = False) -> dict:
    """A new leaderboard holding `entry`, ranked; `board` itself is left unchanged."""
    if board is None:
        board = {"benchmark_hash": entry["benchmark_hash"], "split": entry["split"], "entries": []}
    if entry["benchmark_hash"] != board["benchmark_hash"]:
        raise LeaderboardError(
            f"this leaderboard is for the benchmark whose manifest sha256 is "
            f"{board['benchmark_hash']}; the submission was scored against "
            f"{entry['benchmark_hash']}, another build: its figures are not comparable")
    if entry["split"] != board["split"]:
        raise LeaderboardError(f"this leaderboard ranks the {board['split']} split; the "
                               f"submission was scored on {entry['split']}")
    others = [e for e in board["entries"] if e["name"] != entry["name"]]
    if len(others) != len(board["entries"]) and not replace:
        raise LeaderboardError(f"the leaderboard already has an entry named {entry['name']!r}; "
                               f"choose another --name, or pass --replace to replace it")
    ranked = sorted([*others, entry], key=_rank_key)
    entries = [{**e, "rank": i + 1} for i, e in enumerate(ranked)]
    return {**board, "entries": entries}


def _cell(figure: dict) -> str:
    if figure["ci"] is None:
        return f"{figure['value']:.4f}"
    return f"{figure['value']:.4f} [{figure['ci'][0]:.4f}, {figure['ci'][1]:.4f}]"


def render_md(board: dict) -> str:
    lines = [f"# Attribution88 leaderboard ({board['split']} split)", "",
             f"Benchmark manifest sha256 `{board['benchmark_hash']}`. Ranked by attribution "
             "accuracy, ties by NMI; brackets are 95% bootstrap intervals.", "",
             "| Rank | Name | Attribution accuracy | NMI | Detection accuracy | Date | Submission |",
             "|---|---|---|---|---|---|---|"]
    for e in board["entries"]:
        lines.append(f"| {e['rank']} | {e['name']} | {_cell(e['attribution_accuracy'])} | "
                     f"{_cell(e['nmi'])} | {_cell(e['detection_accuracy'])} | {e['date']} | "
                     f"`{e['submission_sha256'][:12]}` |")
    return "\n".join(lines) + "\n"


def save(folder: Path, board: dict) -> None:
    folder = Path(folder)
    write_text(folder / JSON_NAME, json.dumps(board, indent=2, sort_keys=True) + "\n")
    write_text(folder / MD_NAME, render_md(board))


def update(folder: Path, entry: dict, replace: bool = False, timeout: float = LOCK_TIMEOUT_S) -> dict:
    """Add `entry` to the board in `folder` under its lock: load, add, rewrite. Returns the new
    board; raises LeaderboardError (nothing written) when the entry is refused or the lock is
    not had within `timeout` seconds."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME)
    try:
        with lock.acquire(timeout=timeout):
            board = add_entry(load(folder), entry, replace)
            save(folder, board)
    except Timeout:
        raise LeaderboardError(f"{folder / LOCK_NAME}: another scorer held the leaderboard lock "
                               f"for {timeout:.0f} s; try again") from None
    return board
