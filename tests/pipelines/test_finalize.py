"""The driver's last step: the staging manifest must hold every configured sample exactly once."""

from __future__ import annotations

import json

import pytest

from pipelines.build_attribution88 import BuildError, _finalize
from tests.pipelines.staging import manifest_rows, stage, tiny_config


@pytest.fixture
def cfg(tmp_path):
    return tiny_config(tmp_path)


def test_exact_counts_finalise(tmp_path, cfg):
    staging = tmp_path / "staging"
    stage(staging, manifest_rows(cfg))
    info = _finalize(cfg, staging, "random")
    assert info["samples"] == 16 and info["splits"] == {"train": 8, "val": 4, "test": 4}
    assert json.loads((staging / "dataset_info.json").read_text())["samples"] == 16


def _fails(tmp_path, cfg, rows, *problems):
    staging = tmp_path / "staging"
    stage(staging, rows)
    with pytest.raises(BuildError, match="lost or doubled") as err:
        _finalize(cfg, staging, "random")
    for problem in problems:
        assert problem in str(err.value)
    # dataset_info.json marks a complete benchmark: it must not appear.
    assert not (staging / "dataset_info.json").exists()


def test_one_cell_short_fails(tmp_path, cfg):
    rows = manifest_rows(cfg)
    short = [r for r in rows if (r["source"], r["semantic"], r["split"]) == ("sngan", "rooms", "test")]
    rows.remove(short[0])
    _fails(tmp_path, cfg, rows, "sngan/rooms/test: 0 samples, expected 1")


def test_one_cell_over_fails(tmp_path, cfg):
    rows = manifest_rows(cfg)
    extra = next(r for r in rows if (r["source"], r["semantic"], r["split"]) == ("real", "faces", "val"))
    rows.append({**extra, "key": "real-faces-extra"})
    _fails(tmp_path, cfg, rows, "real/faces/val: 2 samples, expected 1")


def test_a_row_outside_the_configured_cells_fails(tmp_path, cfg):
    rows = manifest_rows(cfg)
    stray = next(r for r in rows if r["source"] == "sngan")
    rows.append({**stray, "key": "ddpm-faces-s00000000", "source": "ddpm"})
    _fails(tmp_path, cfg, rows, "ddpm/faces/train: 1 samples in a cell the config does not have")


def test_one_key_doubled_fails_even_with_exact_counts(tmp_path, cfg):
    rows = manifest_rows(cfg)
    train = [r for r in rows if (r["source"], r["semantic"], r["split"]) == ("sngan", "faces", "train")]
    train[1]["key"] = train[0]["key"]
    _fails(tmp_path, cfg, rows, "1 duplicate keys in the manifest")


def test_one_row_doubled_fails(tmp_path, cfg):
    rows = manifest_rows(cfg)
    rows.append(dict(rows[0]))
    _fails(tmp_path, cfg, rows, "real/faces/train: 3 samples, expected 2", "1 duplicate keys")
