"""The leaderboard: ranked, tied by NMI, one build and split only, names unique unless replaced."""

from __future__ import annotations

import json
import multiprocessing
import time

import pytest

from eval.scoring import leaderboard
from eval.scoring.leaderboard import LeaderboardError, add_entry, render_md
from eval.score import main
from tests.eval.conftest import make_benchmark, truth_rows


def _entry(name, acc, nmi, bench="b" * 64, split="test"):
    figure = lambda v: {"value": v, "ci": [v - 0.01, v + 0.01]}  # noqa: E731
    return {"name": name, "date": "2026-01-01 00:00 UTC", "split": split, "count": 10,
            "submission_sha256": name * 4, "benchmark_hash": bench,
            "attribution_accuracy": figure(acc), "nmi": figure(nmi), "detection_accuracy": figure(0.9)}


def test_ranks_by_accuracy_then_nmi():
    board = None
    for e in (_entry("low", 0.5, 0.9), _entry("tie-low-nmi", 0.8, 0.2), _entry("best", 0.9, 0.1),
              _entry("tie-high-nmi", 0.8, 0.3)):
        board = add_entry(board, e)
    assert [(e["rank"], e["name"]) for e in board["entries"]] == [
        (1, "best"), (2, "tie-high-nmi"), (3, "tie-low-nmi"), (4, "low")]
    md = render_md(board)
    assert md.index("| 1 | best |") < md.index("| 2 | tie-high-nmi |") < md.index("| 4 | low |")
    assert "0.9000 [0.8900, 0.9100]" in md


def test_refuses_another_build_another_split_and_a_repeated_name():
    board = add_entry(None, _entry("a", 0.5, 0.5))
    with pytest.raises(LeaderboardError, match="another build"):
        add_entry(board, _entry("b", 0.6, 0.5, bench="c" * 64))
    with pytest.raises(LeaderboardError, match="ranks the test split"):
        add_entry(board, _entry("b", 0.6, 0.5, split="val"))
    with pytest.raises(LeaderboardError, match="already has an entry named 'a'"):
        add_entry(board, _entry("a", 0.7, 0.5))
    replaced = add_entry(board, _entry("a", 0.7, 0.5), replace=True)
    assert [e["attribution_accuracy"]["value"] for e in replaced["entries"]] == [0.7]
    assert board["entries"][0]["attribution_accuracy"]["value"] == 0.5  # input left unchanged


def _submission(bench, path, correct_every):
    rows = truth_rows(bench)
    lines = ["key,pred"] + [f"{r['key']},{r['label'] if i % correct_every else (r['label'] + 1) % 3}"
                            for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _score(bench, sub, board, name, *extra):
    return main(["--benchmark", str(bench), "--submission", str(sub), "--bootstrap", "100",
                 "--leaderboard", str(board), "--name", name, *extra])


def test_cli_adds_ranked_entries_with_hashes_and_intervals(bench300, tmp_path, capsys):
    board = tmp_path / "board"
    assert _score(bench300, _submission(bench300, tmp_path / "weak.csv", 2), board, "weak") == 0
    capsys.readouterr()
    assert _score(bench300, _submission(bench300, tmp_path / "strong.csv", 10), board, "strong") == 0
    data = json.loads((board / "leaderboard.json").read_text())
    assert [e["name"] for e in data["entries"]] == ["strong", "weak"]
    strong = data["entries"][0]
    report = json.loads(capsys.readouterr().out)
    assert strong["submission_sha256"] == report["submission"]["sha256"]
    assert strong["benchmark_hash"] == data["benchmark_hash"] == report["benchmark"]["manifest_sha256"]
    assert strong["attribution_accuracy"]["value"] == pytest.approx(0.9)
    low, high = strong["attribution_accuracy"]["ci"]
    assert low <= 0.9 <= high
    assert "| 1 | strong |" in (board / "leaderboard.md").read_text()
    assert sorted(p.name for p in board.iterdir()) == [".leaderboard.lock", "leaderboard.json",
                                                        "leaderboard.md"]


def test_cli_refuses_a_mismatched_benchmark_and_writes_nothing(bench300, tmp_path, capsys):
    board = tmp_path / "board"
    assert _score(bench300, _submission(bench300, tmp_path / "a.csv", 2), board, "a") == 0
    before = {p.name: p.read_bytes() for p in board.iterdir()}
    other = make_benchmark(tmp_path / "other", 300, seed=2)  # another build: other manifest bytes
    capsys.readouterr()
    out = tmp_path / "r.json"
    assert _score(other, _submission(other, tmp_path / "b.csv", 2), board, "b", "--out", str(out)) == 2
    assert "another build" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in board.iterdir()} == before
    assert not out.exists() and not (tmp_path / "r.md").exists()


def test_cli_duplicate_name_needs_replace(bench300, tmp_path, capsys):
    board = tmp_path / "board"
    sub = _submission(bench300, tmp_path / "a.csv", 2)
    assert _score(bench300, sub, board, "team") == 0
    assert _score(bench300, _submission(bench300, tmp_path / "b.csv", 5), board, "team") == 2
    assert "--replace" in capsys.readouterr().err
    assert _score(bench300, _submission(bench300, tmp_path / "b.csv", 5), board, "team", "--replace") == 0
    entries = json.loads((board / "leaderboard.json").read_text())["entries"]
    assert len(entries) == 1 and entries[0]["attribution_accuracy"]["value"] == pytest.approx(0.8)


def test_cli_needs_a_name_and_a_readable_leaderboard(bench300, tmp_path, capsys):
    sub = _submission(bench300, tmp_path / "a.csv", 2)
    with pytest.raises(SystemExit) as stop:
        main(["--benchmark", str(bench300), "--submission", str(sub), "--leaderboard", str(tmp_path)])
    assert stop.value.code == 2
    board = tmp_path / "board"
    board.mkdir()
    (board / "leaderboard.json").write_text("{not json")
    capsys.readouterr()
    assert _score(bench300, sub, board, "a") == 2
    assert "not a leaderboard file" in capsys.readouterr().err
    assert (board / "leaderboard.json").read_text() == "{not json"


def test_names_that_would_break_the_table_are_refused():
    with pytest.raises(LeaderboardError, match="without '|'"):
        leaderboard.entry_from_report({}, "a|b", "today")


def _slow_update(args):
    """A scorer whose read-add-rewrite takes 0.3 s: without the lock, writers that overlap
    each rewrite the board they read and all but the last entry are lost."""
    folder, name, value = args
    original = leaderboard.add_entry

    def slow(board, entry, replace=False):
        time.sleep(0.3)
        return original(board, entry, replace)

    leaderboard.add_entry = slow
    try:
        leaderboard.update(folder, _entry(name, value, 0.5))
    finally:
        leaderboard.add_entry = original


def test_concurrent_scorers_lose_no_entry(tmp_path):
    names = [f"run{i}" for i in range(6)]
    with multiprocessing.get_context("fork").Pool(len(names)) as pool:
        pool.map(_slow_update, [(tmp_path, n, 0.1 * i) for i, n in enumerate(names)])
    board = json.loads((tmp_path / "leaderboard.json").read_text())
    assert sorted(e["name"] for e in board["entries"]) == names
    assert [e["rank"] for e in board["entries"]] == list(range(1, len(names) + 1))
    assert "| 6 | run0 |" in (tmp_path / "leaderboard.md").read_text()


def test_a_held_lock_times_out_with_a_clear_error(tmp_path):
    from filelock import FileLock

    with FileLock(tmp_path / leaderboard.LOCK_NAME):
        with pytest.raises(LeaderboardError, match="held the leaderboard lock"):
            leaderboard.update(tmp_path, _entry("late", 0.5, 0.5), timeout=0.2)
    assert not (tmp_path / "leaderboard.json").exists()
