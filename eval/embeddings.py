"""The embeddings of one prediction pass: a `.npz` file and a t-SNE figure (RepMix Fig. 8).

`python -m eval.predict ... --embeddings [PATH]` records, from the same forward pass that gives
the submission rows, each image's embedding: the layer the class logits are read from
(RepMix: the 256-d fc output; Yu et al.: the 512-d fingerprint; DCT-CNN: the flattened last
feature map). It writes

    PATH (default: beside --out, `<out stem>.embeddings.npz`), opened with one np.load:
        keys (N,) str, labels (N,) int64, semantics (N,) int64, embedding (N, D) float32,
        classes (C,) str, semantic_names (S,) str, semantic_seen (S,) bool,
        model, run, checkpoint, epoch, split, manifest_sha256 (0-d),
        tsne_index (M,) int64 (rows of the subsample), tsne_xy (M, 2) float32, tsne_seed,
        tsne_perplexity, tsne_pca_dims (0: none)
    `<PATH stem>.tsne.png`: the 2-d t-SNE of a stratified subsample, coloured by class and,
        beside it, by semantic (unseen semantics drawn as crosses, "(unseen)" in the legend).

The rows are in the submission's order (its `key` column). The t-SNE follows the usual recipe:
PCA to 50 dimensions when the embedding is wider, scikit-learn's Barnes-Hut TSNE with
perplexity min(30, (M - 1) / 3), PCA initialisation and `tsne_seed`. When the split has more
than `--tsne-points` images, the points are a seeded sample stratified by (class, semantic)
cell, each cell getting its share (largest remainders). `--tsne-points 0` writes no figure.
Same run, split and settings give the same bytes on the same libraries and core count (a fixed
zip timestamp, no PNG metadata; the Barnes-Hut gradient is summed by OpenMP threads).
"""

from __future__ import annotations

import argparse
import io
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.atomic import write_bytes

DEFAULT_POINTS = 2000
MIN_POINTS = 10  # below this a t-SNE shows nothing (and its perplexity has no room)
PCA_DIMS = 50
MAX_PERPLEXITY = 30.0
# A fixed zip timestamp (the earliest zip allows): np.savez stamps the current time.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
REAL_COLOUR = "#9e9e9e"
# Qualitative, no repeats for 12 sources (or semantics): tab10 without its grey (kept for real),
# then black, magenta and teal, which stay apart from tab10's hues at a few pixels per point.
SOURCE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#bcbd22", "#17becf", "#000000", "#f032e6", "#469990")
MARKERS = "osD^v<>"  # a second (third...) round of the colours changes the marker


class EmbeddingError(ValueError):
    """Embeddings that cannot be recorded or plotted; the message says why."""


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--embeddings", nargs="?", const="", default=None, metavar="PATH",
                        help="also write each image's embedding (.npz) and a t-SNE PNG; PATH "
                             "defaults to <out stem>.embeddings.npz beside --out")
    parser.add_argument("--tsne-points", type=int, default=None, metavar="N",
                        help=f"images in the t-SNE (a stratified sample when the split has more; "
                             f"default {DEFAULT_POINTS}; 0: no figure)")
    parser.add_argument("--tsne-seed", type=int, default=None, metavar="S",
                        help="seed of the subsample and the t-SNE (default 0)")


@dataclass(frozen=True)
class Outputs:
    """Where the embeddings go and how the t-SNE is drawn."""

    npz: Path
    png: Path | None  # None: no figure
    points: int
    seed: int


def outputs_from_args(args: argparse.Namespace, out: Path) -> Outputs | None:
    """The --embeddings settings, or None when not asked for. Raises EmbeddingError."""
    if args.embeddings is None:
        if args.tsne_points is not None or args.tsne_seed is not None:
            raise EmbeddingError("--tsne-points and --tsne-seed need --embeddings")
        return None
    points = DEFAULT_POINTS if args.tsne_points is None else args.tsne_points
    seed = 0 if args.tsne_seed is None else args.tsne_seed
    if points != 0 and points < MIN_POINTS:
        raise EmbeddingError(f"--tsne-points must be 0 (no figure) or at least {MIN_POINTS}, got {points}")
    if seed < 0:
        raise EmbeddingError(f"--tsne-seed must be >= 0, got {seed}")
    npz = Path(args.embeddings) if args.embeddings else out.with_name(f"{out.stem}.embeddings.npz")
    if npz.suffix != ".npz":
        raise EmbeddingError(f"--embeddings {npz}: the file must end in .npz")
    png = npz.with_name(f"{npz.stem}.tsne.png") if points else None
    if out.resolve() in {npz.resolve(), png.resolve() if png else None}:
        raise EmbeddingError(f"--embeddings {npz} would overwrite --out {out}")
    return Outputs(npz, png, points, seed)


# ---------------------------------------------------------------- recording


@dataclass(frozen=True)
class EmbeddingTable:
    keys: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    semantics: np.ndarray  # (N,) int64, the manifest's semantic_label
    embedding: np.ndarray  # (N, D) float32


class EmbeddingRecorder:
    """Pairs each batch the prediction loop reads (`tap`) with the embedding of the model call
    that follows it (a forward hook), so predict_rows runs the model once and stays unchanged.

        with EmbeddingRecorder(model) as recorder:
            rows = list(predict_rows(model, recorder.tap(batches), ...))
        table = recorder.table()
    """

    def __init__(self, model: nn.Module):
        self._model = model
        self._handle = None
        self._batches: list[tuple[list[str], torch.Tensor, torch.Tensor]] = []
        self._embeddings: list[torch.Tensor] = []

    def __enter__(self) -> EmbeddingRecorder:
        self._handle = self._model.register_forward_hook(self._record)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()

    def tap(self, batches: Iterable[dict]) -> Iterator[dict]:
        for batch in batches:
            if "semantic" not in batch:
                raise EmbeddingError("the batches carry no 'semantic' ids (eval.data.eval_loader's do)")
            self._batches.append((list(batch["key"]), batch["label"], batch["semantic"]))
            yield batch

    def _record(self, module: nn.Module, inputs: tuple, output) -> None:
        if len(self._embeddings) != len(self._batches) - 1:
            raise EmbeddingError(f"the model ran {len(self._embeddings) + 1} times for "
                                 f"{len(self._batches)} batches; embeddings need one call per batch")
        embedding = output.embedding.detach().float().cpu()
        keys = self._batches[-1][0]
        if embedding.dim() != 2 or embedding.shape[0] != len(keys):
            raise EmbeddingError(f"the embedding is {tuple(embedding.shape)} for a batch of "
                                 f"{len(keys)} images; expected ({len(keys)}, D)")
        self._embeddings.append(embedding)

    def table(self) -> EmbeddingTable:
        if len(self._embeddings) != len(self._batches):
            raise EmbeddingError(f"{len(self._batches)} batches read but {len(self._embeddings)} "
                                 f"embedded")
        if not self._batches:
            raise EmbeddingError("no images were predicted, so there is nothing to embed")
        return EmbeddingTable(
            keys=np.array([k for keys, _, _ in self._batches for k in keys], dtype=str),
            labels=torch.cat([b[1].reshape(-1) for b in self._batches]).numpy().astype(np.int64),
            semantics=torch.cat([b[2].reshape(-1) for b in self._batches]).numpy().astype(np.int64),
            embedding=torch.cat(self._embeddings).numpy().astype(np.float32))


# ---------------------------------------------------------------- t-SNE


def stratified_subsample(labels: np.ndarray, semantics: np.ndarray, points: int, seed: int) -> np.ndarray:
    """Sorted row indices of `points` rows (all rows when there are fewer), each (label,
    semantic) cell getting its proportional share: floor, then the largest remainders (ties
    to the cell listed first), then a seeded draw without replacement inside each cell."""
    n = len(labels)
    if points >= n:
        return np.arange(n, dtype=np.int64)
    cells, inverse = np.unique(np.stack([labels, semantics], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse, minlength=len(cells))
    exact = sizes * points / n
    quota = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:points - int(quota.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(inverse == c), size=int(quota[c]), replace=False)
              for c in range(len(cells))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@dataclass(frozen=True)
class Tsne:
    index: np.ndarray  # (M,) rows of the table
    xy: np.ndarray  # (M, 2) float32
    seed: int
    perplexity: float
    pca_dims: int  # 0: the embedding went in as it is


def tsne(table: EmbeddingTable, points: int, seed: int) -> Tsne:
    """The 2-d t-SNE of a stratified subsample of the table. Raises EmbeddingError."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    index = stratified_subsample(table.labels, table.semantics, points, seed)
    if len(index) < MIN_POINTS:
        raise EmbeddingError(f"the split has {len(index)} images; a t-SNE needs at least "
                             f"{MIN_POINTS} (pass --tsne-points 0 for no figure)")
    x = table.embedding[index]
    pca_dims = 0
    if x.shape[1] > PCA_DIMS:
        pca_dims = min(PCA_DIMS, len(index))
        x = PCA(n_components=pca_dims, svd_solver="full", random_state=seed).fit_transform(x)
    perplexity = min(MAX_PERPLEXITY, (len(index) - 1) / 3)
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
              random_state=seed).fit_transform(x.astype(np.float32))
    return Tsne(index, xy.astype(np.float32), seed, perplexity, pca_dims)


def class_colours(classes: Sequence[str]) -> list[tuple[str, str]]:
    """(colour, marker) per class: real a neutral grey, sources qualitative colours, a new
    marker each time the colours run out."""
    out = [(REAL_COLOUR, "o")]
    for i in range(len(classes) - 1):
        out.append((SOURCE_COLOURS[i % len(SOURCE_COLOURS)], MARKERS[i // len(SOURCE_COLOURS) % len(MARKERS)]))
    return out


def plot_tsne(xy: np.ndarray, labels: np.ndarray, semantics: np.ndarray, classes: Sequence[str],
              semantic_names: Sequence[str], semantic_seen: Sequence[bool], title: str, seed: int) -> bytes:
    """Two t-SNE panels side by side, by class and by semantic, as PNG bytes; legends (with
    point counts) outside the axes. Points are drawn in a seeded random order so that no
    class hides under the one drawn last."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n = len(xy)
    order = np.random.default_rng(seed).permutation(n)
    size = float(np.clip(12000 / max(n, 1), 4, 30))
    fig, (ax_class, ax_sem) = plt.subplots(1, 2, figsize=(15, 6.2))
    fig.suptitle(title, fontsize=11)

    def panel(ax, ids, styles, names, panel_title, legend_title):
        counts = np.bincount(ids, minlength=len(names))
        markers = sorted({marker for _, marker in styles})
        for marker in markers:
            rows = order[[styles[i][1] == marker for i in ids[order]]]
            if len(rows):
                colours = [styles[i][0] for i in ids[rows]]
                # an "x" has no face: colour its lines instead
                filled = marker not in "x+"
                ax.scatter(xy[rows, 0], xy[rows, 1], s=size, marker=marker,
                           c=colours, alpha=0.75, linewidths=0 if filled else 1.0)
        handles = [Line2D([], [], linestyle="", marker=styles[i][1], markersize=7, color=styles[i][0],
                          markeredgewidth=1.5 if styles[i][1] in "x+" else 0)
                   for i in range(len(names)) if counts[i]]
        labels_ = [f"{names[i]} ({counts[i]})" for i in range(len(names)) if counts[i]]
        ax.legend(handles, labels_, title=legend_title, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0, frameon=False, fontsize=9, title_fontsize=9)
        ax.set_title(panel_title)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")

    panel(ax_class, labels, class_colours(classes), list(classes), "coloured by class",
          "class (points)")
    sem_styles = [(SOURCE_COLOURS[i % len(SOURCE_COLOURS)], "o" if seen else "x")
                  for i, seen in enumerate(semantic_seen)]
    sem_names = [name if seen else f"{name} (unseen)" for name, seen in zip(semantic_names, semantic_seen)]
    panel(ax_sem, semantics, sem_styles, sem_names, "coloured by semantic", "semantic (points)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------- files


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed .npz (what np.savez writes) with a fixed timestamp, so the bytes repeat;
    no array needs pickle to load."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class Meta:
    """What the embeddings were made from, written into the file and the figure's title."""

    model: str
    run: str
    checkpoint: str
    epoch: int
    split: str
    manifest_sha256: str
    classes: tuple[str, ...]
    semantic_names: tuple[str, ...]
    semantic_seen: tuple[bool, ...]


def render(table: EmbeddingTable, meta: Meta, outputs: Outputs) -> dict[Path, bytes]:
    """The files to write, path -> bytes, all computed before any is written. Raises
    EmbeddingError on labels outside the class or semantic lists."""
    for name, ids, count in (("label", table.labels, len(meta.classes)),
                             ("semantic", table.semantics, len(meta.semantic_names))):
        bad = np.flatnonzero((ids < 0) | (ids >= count))
        if len(bad):
            raise EmbeddingError(f"image {table.keys[bad[0]]}: {name} {ids[bad[0]]} is outside "
                                 f"0..{count - 1}")
    arrays = {"keys": table.keys, "labels": table.labels, "semantics": table.semantics,
              "embedding": table.embedding, "classes": np.array(meta.classes, dtype=str),
              "semantic_names": np.array(meta.semantic_names, dtype=str),
              "semantic_seen": np.array(meta.semantic_seen, dtype=bool),
              "model": np.array(meta.model), "run": np.array(meta.run),
              "checkpoint": np.array(meta.checkpoint), "epoch": np.array(meta.epoch, dtype=np.int64),
              "split": np.array(meta.split), "manifest_sha256": np.array(meta.manifest_sha256)}
    files: dict[Path, bytes] = {}
    if outputs.png is not None:
        result = tsne(table, outputs.points, outputs.seed)
        arrays.update(tsne_index=result.index, tsne_xy=result.xy,
                      tsne_seed=np.array(result.seed, dtype=np.int64),
                      tsne_perplexity=np.array(result.perplexity, dtype=np.float64),
                      tsne_pca_dims=np.array(result.pca_dims, dtype=np.int64))
        total = len(table.keys)
        sample = (f"all {total} images" if len(result.index) == total
                  else f"{len(result.index)} of {total} images (stratified by class x semantic)")
        pca = f"PCA to {result.pca_dims}, " if result.pca_dims else ""
        title = (f"t-SNE of {meta.model}'s {table.embedding.shape[1]}-d embedding: run {meta.run}, "
                 f"{meta.split} split, checkpoint {meta.checkpoint} (epoch {meta.epoch})\n"
                 f"{sample}; {pca}perplexity {result.perplexity:.3g}, seed {result.seed}")
        files[outputs.png] = plot_tsne(result.xy, table.labels[result.index],
                                       table.semantics[result.index], meta.classes,
                                       meta.semantic_names, meta.semantic_seen, title, result.seed)
    files = {outputs.npz: npz_bytes(arrays), **files}
    return files


def write_files(files: dict[Path, bytes]) -> None:
    for path, data in files.items():
        write_bytes(path, data)
