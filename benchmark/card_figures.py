"""The dataset card's figures: a sample grid per split and the selection distances per class.

Both are drawn from the manifest and the shards alone, and encoded without a date or a
software version, so the same build gives the same PNG bytes on the same OpenCV/matplotlib.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa

from benchmark import protocol
from benchmark.atomic import atomic_path
from benchmark.dataset_files import read_pngs
from benchmark.images import decode_image, encode_png, image_grid, label_rows

GRID_COLUMNS = 8
# Grid tiles are enlarged (nearest neighbour, so every stored pixel stays a visible block) to
# at least this side, so the caption under a tile fits: "elastic_transform 5*" at the
# caption font needs ~110 px.
MIN_TILE = 128
UNSEEN_MARK = "*"
GUTTER = 2  # white columns between tiles (added, never painted over a stored pixel)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BLACK, _GREY, _WHITE = (0, 0, 0), (90, 90, 90), (255, 255, 255)
DISTANCES_PNG = "selection-distances.png"


# ---------------------------------------------------------------- sample grids


def tile_side(resolution: int) -> int:
    """A grid tile's side: the resolution times the smallest integer reaching MIN_TILE."""
    return resolution * -(-MIN_TILE // resolution)


def tile_caption(row: dict) -> list[str]:
    """The lines under a tile: its semantic, then (val/test) its corruption and severity, an
    unseen corruption marked, or `clean`."""
    lines = [row["semantic"]]
    if row["split"] != "train":
        if row["corruption"] == protocol.CLEAN:
            lines.append("clean")
        else:
            mark = "" if row["corruption_seen"] else UNSEEN_MARK
            lines.append(f"{row['corruption']} {row['severity']}{mark}")
    return lines


def _fit_scale(texts: list[str], width: int, largest: float) -> float:
    """The largest font scale (down from `largest`, floor 0.3) at which every text fits."""
    scale = largest
    while scale > 0.3 and max(cv2.getTextSize(t, _FONT, scale, 1)[0][0] for t in texts) > width:
        scale = round(scale - 0.05, 2)
    return scale


def _text_block(lines: list[tuple[str, tuple[int, int, int]]], width: int, scale: float,
                pad: int) -> np.ndarray:
    """A white strip `width` wide holding `lines` (text, colour), left-aligned."""
    height = cv2.getTextSize("Ag", _FONT, scale, 1)[0][1]
    step = height + max(3, height // 2)
    block = np.full((pad + step * len(lines) + pad // 2, width, 3), 255, np.uint8)
    for i, (text, colour) in enumerate(lines):
        cv2.putText(block, text, (pad, pad + height + i * step), _FONT, scale, colour, 1,
                    cv2.LINE_AA)
    return block


def _captioned(tile: np.ndarray, lines: list[str], scale: float, lines_per_tile: int) -> np.ndarray:
    side = tile.shape[1]
    caption = _text_block([(t, _BLACK if i == 0 else _GREY) for i, t in enumerate(lines)]
                          + [("", _BLACK)] * (lines_per_tile - len(lines)), side, scale, 4)
    out = np.vstack([tile, caption])
    return np.hstack([out, np.full((out.shape[0], GUTTER, 3), 255, np.uint8)])


@dataclass(frozen=True)
class GridPicks:
    """The samples one split's grid shows: per class, its first GRID_COLUMNS manifest rows."""

    split: str
    rows: dict[str, list[dict]]  # class -> manifest rows (key, split, source, semantic, ...)
    total: int  # samples in the split
    per_class: dict[str, int]  # samples of each class in the split


def pick_grid_samples(manifest: pa.Table, classes: tuple[str, ...]) -> list[GridPicks]:
    """Each split's picks, for the splits that have samples, in split order."""
    rows = manifest.select(["key", "split", "source", "semantic", "corruption", "severity",
                            "corruption_seen", "shard"]).to_pylist()
    out = []
    for split in protocol.SPLIT_NAMES:
        mine = [r for r in rows if r["split"] == split]
        if not mine:
            continue
        per_class = {c: sum(1 for r in mine if r["source"] == c) for c in classes}
        picks = {c: [r for r in mine if r["source"] == c][:GRID_COLUMNS] for c in classes}
        out.append(GridPicks(split, picks, len(mine), per_class))
    return out


def render_grid(picks: GridPicks, images: dict[str, np.ndarray], classes: tuple[str, ...],
                resolution: int) -> np.ndarray:
    """One split's grid: a title saying what it shows, a row per class named on its left, each
    tile captioned with its semantic and (val/test) its corruption and severity."""
    side = tile_side(resolution)
    factor = side // resolution
    captions = [tile_caption(r) for rows in picks.rows.values() for r in rows]
    lines_per_tile = max((len(c) for c in captions), default=1)
    scale = _fit_scale([t for c in captions for t in c] or ["x"], side - 8, 0.45)
    blank = np.full((side, side, 3), 255, np.uint8)
    columns = max(len(rows) for rows in picks.rows.values())
    tiles = []
    for c in classes:
        row = []
        for r in picks.rows[c]:
            image = images[r["key"]]
            if image.shape[:2] != (resolution, resolution):
                raise ValueError(f"sample {r['key']}: stored {image.shape[1]}x{image.shape[0]}, "
                                 f"the build's resolution is {resolution}")
            row.append(_captioned(np.repeat(np.repeat(image, factor, 0), factor, 1),
                                  tile_caption(r), scale, lines_per_tile))
        row += [_captioned(blank, [], scale, lines_per_tile)] * (columns - len(row))
        tiles.extend(row)
    grid = label_rows(image_grid(np.stack(tiles), columns),
                      [f"{c} ({picks.per_class[c]})" for c in classes], tiles[0].shape[0], 0.6)
    title = [(f"{picks.split} split: {picks.total} samples (a class's count beside its name); "
              f"shown: the first {columns} of each class in manifest order", _BLACK)]
    if picks.split == "train":
        title.append(("stored clean (training corrupts online); under each image: its semantic",
                      _GREY))
    else:
        title.append(("under each image: its semantic, then the corruption and severity (1-5) "
                      f"stored in it; {UNSEEN_MARK} = a corruption unseen in training", _GREY))
    # The title keeps a readable size: a narrow grid (few samples per class) gets a white
    # margin on its right instead of a shrunken title.
    head_scale = _fit_scale([t for t, _ in title], grid.shape[1] - 16, 0.6)
    if head_scale < 0.5:
        head_scale = 0.5
        width = max(cv2.getTextSize(t, _FONT, head_scale, 1)[0][0] for t, _ in title) + 16
        grid = np.hstack([grid, np.full((grid.shape[0], width - grid.shape[1], 3), 255, np.uint8)])
    return np.vstack([_text_block(title, grid.shape[1], head_scale, 8), grid])


def write_grids(out_dir: Path, manifest: pa.Table, classes: tuple[str, ...],
                resolution: int) -> dict[str, str]:
    """samples-SPLIT.png per split with samples; returns {split: file name}."""
    written = {}
    for picks in pick_grid_samples(manifest, classes):
        wanted = [(r["shard"], r["key"]) for rows in picks.rows.values() for r in rows]
        pngs = read_pngs(out_dir, wanted)
        missing = sorted({k for _, k in wanted} - set(pngs))
        if missing:
            raise ValueError(f"{out_dir}: samples {missing[:5]} are in the manifest but not in "
                             f"their shards")
        grid = render_grid(picks, {k: decode_image(v) for k, v in pngs.items()}, classes,
                           resolution)
        name = f"samples-{picks.split}.png"
        with atomic_path(out_dir / name) as tmp:
            tmp.write_bytes(encode_png(grid))
        written[picks.split] = name
    return written


# ---------------------------------------------------------------- selection distances


DISTANCE_LABELS = {
    "inception": "InceptionV3 feature distance to the nearest real reference photo",
    "lpips": "LPIPS distance to the nearest real reference photo",
}


def distances_by_class(manifest: pa.Table, classes: tuple[str, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per class with recorded distances: (distance, filled) arrays of its samples, all splits.
    Real photos have none (null), so the real class is absent."""
    rows = manifest.select(["source", "distance", "filled"]).to_pylist()
    out = {}
    for c in classes:
        mine = [r for r in rows if r["source"] == c and r["distance"] is not None]
        if mine:
            out[c] = (np.array([r["distance"] for r in mine], dtype=np.float64),
                      np.array([r["filled"] for r in mine], dtype=bool))
    return out


def distance_histogram_png(manifest: pa.Table, classes: tuple[str, ...], extractor: str) -> bytes | None:
    """A histogram panel per class of the kept samples' selection distances, on shared bins;
    a cluster's top-up picks (`filled`) stacked in another colour. None when no sample has a
    distance."""
    # A bare Figure on the Agg canvas: no pyplot, so no global backend or figure state is
    # touched in the caller's process (a notebook keeps its own backend).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = distances_by_class(manifest, classes)
    if not data:
        return None
    every = np.concatenate([d for d, _ in data.values()])
    low, high = float(every.min()), float(every.max())
    if high <= low:
        high = low + 1.0
    bins = np.linspace(low, high, 31)
    columns = min(4, len(data))
    rows = -(-len(data) // columns)
    fig = Figure(figsize=(max(6.4, 3.2 * columns), 2.4 * rows + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, sharex=True, squeeze=False)
    any_filled = any(f.any() for _, f in data.values())
    for ax, (name, (dist, filled)) in zip(axes.flat, data.items()):
        ax.hist([dist[~filled], dist[filled]], bins=bins, stacked=True,
                color=["#4c72b0", "#dd8452"], label=["nearest in its cluster", "top-up of a short cluster"])
        ax.axvline(float(np.median(dist)), color="black", linewidth=1, linestyle="--")
        ax.set_title(f"{name}: {len(dist)} samples, median {np.median(dist):.3g}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(data):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("distance", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("samples", fontsize=8)
    fig.suptitle(f"Selection distances of the kept samples, all splits\n"
                 f"{DISTANCE_LABELS.get(extractor, extractor)}; dashed line: median", fontsize=10)
    if any_filled:
        axes.flat[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def write_distance_histogram(out_dir: Path, manifest: pa.Table, classes: tuple[str, ...],
                             extractor: str) -> str | None:
    """selection-distances.png in `out_dir`; returns its name, None when nothing to plot."""
    png = distance_histogram_png(manifest, classes, extractor)
    if png is None:
        return None
    with atomic_path(out_dir / DISTANCES_PNG) as tmp:
        tmp.write_bytes(png)
    return DISTANCES_PNG
