"""The report's figures as PNG bytes: confusion matrix, and accuracy vs corruption severity.

Rendered with matplotlib's Agg backend into memory, so the caller writes them atomically, and
only once the whole report has been computed. The PNG metadata carries no software version
or date, so the same report gives the same bytes on the same matplotlib.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display here; also keeps a GUI backend from being picked up

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CLEAN = "none"


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


def corruption_png(by_corruption_severity: dict[str, dict]) -> bytes:
    """Attribution accuracy against severity, one line per corruption (as Fig. 3 of RepMix).

    `by_corruption_severity` maps "corruption/severity" to figures with attribution_accuracy;
    the clean images' accuracy is drawn as a dashed line at every severity.
    """
    lines: dict[str, list[tuple[int, float]]] = {}
    clean = None
    for name, values in by_corruption_severity.items():
        corruption, severity = name.rsplit("/", 1)
        if corruption == CLEAN:
            clean = values["attribution_accuracy"]
        else:
            lines.setdefault(corruption, []).append((int(severity), values["attribution_accuracy"]))
    counts = [v["count"] for k, v in by_corruption_severity.items() if not k.startswith(CLEAN + "/")
              and "count" in v]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # 19 lines: tab20 gives each its own colour (the default cycle repeats after 10).
    colours = plt.get_cmap("tab20").colors
    for i, corruption in enumerate(sorted(lines)):
        points = sorted(lines[corruption])
        ax.plot([s for s, _ in points], [a for _, a in points], marker="os^D"[i % 4],
                color=colours[i % len(colours)], label=corruption)
    if clean is not None:
        ax.axhline(clean, color="black", linestyle="--", label="clean")
    ax.set_xlabel("severity")
    ax.set_ylabel("attribution accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(1, 6))
    ax.grid(alpha=0.3)
    if lines or clean is not None:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    else:
        ax.text(0.5, 0.5, "no corrupted images in this split", ha="center", transform=ax.transAxes)
    # A reader needs the sample size to tell a real dip from noise.
    ax.set_title("Attribution accuracy per corruption" + (
        f" ({min(counts)}-{max(counts)} images per point)" if counts else ""))
    return _png(fig)
