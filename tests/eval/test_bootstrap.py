"""The multinomial bootstrap: reproducible, brackets the estimate, same law as resampling rows."""

from __future__ import annotations

import numpy as np
import pytest

from eval.scoring.bootstrap import headline_intervals, resample_tables
from eval.scoring.metrics import HEADLINE, contingency, figures


def _table(seed=0, n=600, k=4, skill=0.6):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < skill, truth, rng.integers(0, k, n))
    return truth, pred, contingency(truth, pred, k)[0]


def test_resampled_tables_keep_the_total_and_shape():
    _, _, table = _table()
    drawn = resample_tables(table, 50, seed=1)
    assert drawn.shape == (50, 4, 4)
    assert (drawn.sum(axis=(1, 2)) == table.sum()).all()
    assert (drawn[:, table == 0] == 0).all()  # an empty cell is never drawn


def test_intervals_are_reproducible_with_the_seed_and_change_with_it():
    _, _, table = _table()
    a = headline_intervals(table, 300, seed=7)
    assert a == headline_intervals(table, 300, seed=7)
    assert a != headline_intervals(table, 300, seed=8)


@pytest.mark.parametrize("seed", range(3))
def test_interval_contains_the_point_estimate(seed):
    _, _, table = _table(seed)
    point = figures(table)
    for name, interval in headline_intervals(table, 1000, seed=seed).items():
        assert interval.low <= point[name] <= interval.high, name
        assert interval.low < interval.high


def test_a_perfect_submission_has_a_degenerate_accuracy_interval():
    truth = np.repeat(np.arange(3), 20)
    table = contingency(truth, truth, 3)[0]
    ci = headline_intervals(table, 200, seed=0)
    assert ci["attribution_accuracy"].as_list() == [1.0, 1.0]
    assert ci["detection_accuracy"].as_list() == [1.0, 1.0]


def test_multinomial_tables_have_the_law_of_resampled_rows():
    """The shortcut against the textbook bootstrap (resample row indices, recompute)."""
    truth, pred, table = _table(seed=5, n=300)
    fast = figures(resample_tables(table, 4000, seed=0))
    rng = np.random.default_rng(1)
    rows = rng.integers(0, len(truth), size=(4000, len(truth)))
    slow = figures(np.stack([contingency(truth[r], pred[r], 4)[0] for r in rows]))
    for name in HEADLINE:
        assert np.mean(fast[name]) == pytest.approx(np.mean(slow[name]), abs=0.004), name
        assert np.std(fast[name]) == pytest.approx(np.std(slow[name]), rel=0.08), name
        assert np.percentile(fast[name], 2.5) == pytest.approx(np.percentile(slow[name], 2.5), abs=0.01)


def test_an_empty_table_cannot_be_bootstrapped():
    with pytest.raises(ValueError, match="empty"):
        resample_tables(np.zeros((2, 2), dtype=np.int64), 10, seed=0)
