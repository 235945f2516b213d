"""The report's figures as PNG bytes: confusion matrix, and accuracy per corruption x severity.

Rendered with matplotlib's Agg backend into memory, so the caller writes them atomically, and
only once the whole report has been computed. The PNG metadata carries no software version
or date, so the same report gives the same bytes on the same matplotlib.
"""

from __future__ import annotations

import io
from collections.abc import Collection

import matplotlib

matplotlib.use("Agg")  # no display here; also keeps a GUI backend from being picked up

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from benchmark.protocol import CLEAN  # noqa: E402



def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def confusion_png(matrix: list[list[int]], classes: list[str]) -> bytes:
    """Row-normalised confusion matrix (truth rows, prediction columns), counts written in."""
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 1.2 + 0.55 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(classes) <= 16:  # beyond that the numbers no longer fit their cells
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_title("Confusion matrix")
    return _png(fig)


def corruption_png(by_corruption_severity: dict[str, dict],
                   seen: Collection[str] | None = None) -> bytes:
    """Attribution accuracy per corruption x severity as a heatmap, the count in every cell.

    `by_corruption_severity` maps "corruption/severity" to figures with attribution_accuracy
    and count; `seen` names the corruptions the training split saw. Rows are grouped seen,
    then unseen, each sorted by accuracy over all its severities (best first), so the ranking
    of Fig. 3 of RepMix reads from top to bottom; a cell resting on a handful of images says so.
    """
    cells: dict[str, dict[int, tuple[float, int]]] = {}
    clean = None
    for name, values in by_corruption_severity.items():
        corruption, severity = name.rsplit("/", 1)
        point = (values["attribution_accuracy"], int(values.get("count", 0)))
        if corruption == CLEAN:
            clean = point
        else:
            cells.setdefault(corruption, {})[int(severity)] = point
    severities = sorted({s for row in cells.values() for s in row}) or list(range(1, 6))
    seen = set(seen or ())

    def overall(corruption: str) -> float:
        row = cells[corruption].values()
        return sum(a * n for a, n in row) / max(1, sum(n for _, n in row))

    rows = sorted(cells, key=lambda c: (c not in seen, -overall(c), c))
    # the last column pools every severity: the figure the rows are sorted by
    accuracy = np.full((len(rows), len(severities) + 1), np.nan)
    counts = np.zeros(accuracy.shape, dtype=np.int64)
    for i, corruption in enumerate(rows):
        for j, severity in enumerate(severities):
            if severity in cells[corruption]:
                accuracy[i, j], counts[i, j] = cells[corruption][severity]
        accuracy[i, -1], counts[i, -1] = overall(corruption), counts[i, :-1].sum()
    fig, ax = plt.subplots(figsize=(2.8 + 0.95 * accuracy.shape[1], 1.4 + 0.36 * max(len(rows), 3)))
    if rows:
        # grey: no image of that corruption at that severity
        cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#dddddd")
        image = ax.imshow(np.ma.masked_invalid(accuracy), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (i, j), value in np.ndenumerate(accuracy):
            text = "no images" if np.isnan(value) else f"{value:.2f}\nn={counts[i, j]}"
            dark = not np.isnan(value) and (value < 0.15 or value > 0.85)
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5, linespacing=0.9,
                    color="white" if dark else "black")
        labels = [c if c in seen or not seen else f"{c} (unseen)" for c in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_xticks(range(accuracy.shape[1]), [str(s) for s in severities] + ["all"])
        ax.axvline(len(severities) - 0.5, color="black", linewidth=1.5)
        boundary = sum(c in seen for c in rows)
        if seen and 0 < boundary < len(rows):  # a rule between seen and unseen corruptions
            ax.axhline(boundary - 0.5, color="black", linewidth=1.5)
        fig.colorbar(image, ax=ax, label="attribution accuracy", fraction=0.05, pad=0.02)
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no corrupted images in this split", ha="center", transform=ax.transAxes)
    ax.set_xlabel("severity")
    title = "Attribution accuracy per corruption and severity"
    if clean is not None:
        title += f"\nclean images: {clean[0]:.2f} (n={clean[1]})"
    ax.set_title(title, fontsize=10)
    return _png(fig)
