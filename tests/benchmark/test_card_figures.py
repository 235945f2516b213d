"""The card's figures: sample grids that say what they show, and the selection distances."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from benchmark.card_figures import (GRID_COLUMNS, GUTTER, UNSEEN_MARK, distance_histogram_png,
                                    distances_by_class, pick_grid_samples, render_grid,
                                    tile_caption, tile_side, write_grids)
from benchmark.images import decode_image, encode_png
from benchmark.manifest import MANIFEST_SCHEMA
from benchmark.shards import ShardSample, write_shard

CLASSES = ("real", "sngan")
RES = 32


def _row(key, split, source, corruption="none", severity=0, seen=True, **extra):
    row = {n: None for n in MANIFEST_SCHEMA.names}
    row.update(key=key, split=split, source=source, semantic="faces", corruption=corruption,
               severity=severity, corruption_seen=seen, shard=f"{split}-000000.tar", filled=False)
    row.update(extra)
    return row


def _image(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 256, (RES, RES, 3), dtype=np.uint8)


def _manifest(rows) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


ROWS = ([_row(f"real-faces-{i}", "train", "real") for i in range(10)]
        + [_row(f"sngan-faces-s{i}", "train", "sngan") for i in range(3)]
        + [_row("sngan-faces-s90", "test", "sngan", "snow", 4, seen=False),
           _row("real-faces-90", "test", "real", "fog", 2),
           _row("real-faces-91", "test", "real")])


def test_captions_name_the_semantic_and_the_stored_corruption():
    assert tile_caption(ROWS[0]) == ["faces"]
    assert tile_caption(ROWS[13]) == ["faces", f"snow 4{UNSEEN_MARK}"]
    assert tile_caption(ROWS[14]) == ["faces", "fog 2"]
    assert tile_caption(ROWS[15]) == ["faces", "clean"]


@pytest.mark.parametrize("res, side", [(32, 128), (64, 128), (100, 200), (128, 128), (256, 256)])
def test_tiles_are_enlarged_by_a_whole_factor_to_fit_a_caption(res, side):
    assert tile_side(res) == side


def test_picks_are_the_first_of_each_class_in_manifest_order_per_split():
    train, test = pick_grid_samples(_manifest(ROWS), CLASSES)
    assert (train.split, train.total, train.per_class) == ("train", 13, {"real": 10, "sngan": 3})
    assert [r["key"] for r in train.rows["real"]] == [f"real-faces-{i}" for i in range(GRID_COLUMNS)]
    assert [r["key"] for r in train.rows["sngan"]] == [f"sngan-faces-s{i}" for i in range(3)]
    assert (test.split, [r["key"] for r in test.rows["real"]]) == ("test", ["real-faces-90", "real-faces-91"])


def _find(grid: np.ndarray, tile: np.ndarray) -> list[tuple[int, int]]:
    """Top-left corners where `tile` lies in `grid` exactly."""
    h, w = tile.shape[:2]
    ys, xs = np.nonzero(np.all(grid[: grid.shape[0] - h + 1, : grid.shape[1] - w + 1]
                               == tile[0, 0], axis=2))
    return [(y, x) for y, x in zip(ys, xs) if np.array_equal(grid[y:y + h, x:x + w], tile)]


def test_grid_shows_each_picked_image_enlarged_pixel_for_pixel():
    (_, test) = pick_grid_samples(_manifest(ROWS), CLASSES)
    images = {r["key"]: _image(i) for i, r in enumerate(ROWS)}
    grid = render_grid(test, images, CLASSES, RES)
    factor = tile_side(RES) // RES
    spots = {}
    for key in ("sngan-faces-s90", "real-faces-90", "real-faces-91"):
        big = np.repeat(np.repeat(images[key], factor, 0), factor, 1)
        (spots[key],) = _find(grid, big)
    # real is the first row, sngan the second; real's two samples side by side
    assert spots["real-faces-90"][0] == spots["real-faces-91"][0] < spots["sngan-faces-s90"][0]
    assert spots["real-faces-91"][1] - spots["real-faces-90"][1] == tile_side(RES) + GUTTER
    assert grid[:spots["real-faces-90"][0]].min() < 255  # a title above the tiles


def test_the_caption_is_drawn_under_the_tile_and_nowhere_else():
    rows = [dict(r) for r in ROWS if r["split"] == "test"]
    images = {r["key"]: _image(i) for i, r in enumerate(rows)}
    (a,) = pick_grid_samples(_manifest(rows), CLASSES)
    rows[0]["severity"] = 5  # sngan-faces-s90: "snow 4*" -> "snow 5*"
    (b,) = pick_grid_samples(_manifest(rows), CLASSES)
    grid_a, grid_b = render_grid(a, images, CLASSES, RES), render_grid(b, images, CLASSES, RES)
    assert grid_a.shape == grid_b.shape
    changed = np.argwhere(np.any(grid_a != grid_b, axis=2))
    big = np.repeat(np.repeat(images["sngan-faces-s90"], 4, 0), 4, 1)
    ((y, x),) = _find(grid_a, big)
    assert len(changed) and changed[:, 0].min() >= y + tile_side(RES)  # below the image
    assert x <= changed[:, 1].min() and changed[:, 1].max() < x + tile_side(RES)  # its column
    assert np.array_equal(render_grid(a, images, CLASSES, RES), grid_a)  # deterministic


def test_an_image_at_another_resolution_is_named():
    (_, test) = pick_grid_samples(_manifest(ROWS), CLASSES)
    images = {r["key"]: _image(i) for i, r in enumerate(ROWS)}
    images["real-faces-91"] = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="real-faces-91.*16x16"):
        render_grid(test, images, CLASSES, RES)


def test_write_grids_reads_the_shards_and_names_a_missing_sample(tmp_path):
    rows = [r for r in ROWS if r["split"] == "test"]
    images = {r["key"]: _image(i) for i, r in enumerate(rows)}
    write_shard(tmp_path / "test-000000.tar",
                [ShardSample(r["key"], encode_png(images[r["key"]]), {"key": r["key"]}) for r in rows])
    assert write_grids(tmp_path, _manifest(rows), CLASSES, RES) == {"test": "samples-test.png"}
    (picks,) = pick_grid_samples(_manifest(rows), CLASSES)
    written = decode_image((tmp_path / "samples-test.png").read_bytes())
    assert np.array_equal(written, render_grid(picks, images, CLASSES, RES))
    lost = rows + [_row("real-faces-92", "test", "real")]
    with pytest.raises(ValueError, match="real-faces-92"):
        write_grids(tmp_path, _manifest(lost), CLASSES, RES)


def _with_distances() -> pa.Table:
    rows = [_row(f"real-faces-{i}", "train", "real") for i in range(3)]
    rows += [_row(f"sngan-faces-s{i}", "train", "sngan", distance=0.5 + i / 10, filled=i == 4)
             for i in range(6)]
    return _manifest(rows)


def test_distances_per_class_leave_out_the_real_photos():
    data = distances_by_class(_with_distances(), CLASSES)
    assert list(data) == ["sngan"]
    distance, filled = data["sngan"]
    assert np.allclose(distance, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert filled.tolist() == [False, False, False, False, True, False]


def test_histogram_is_a_dateless_png_with_the_same_bytes_twice():
    png = distance_histogram_png(_with_distances(), CLASSES, "inception")
    assert png == distance_histogram_png(_with_distances(), CLASSES, "inception")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and "Software" not in image.info
        assert image.width >= 600
    assert distance_histogram_png(_manifest(ROWS), CLASSES, "inception") is None
