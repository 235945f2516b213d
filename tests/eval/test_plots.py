from matplotlib.axes import Axes

from benchmark.protocol import CORRUPTIONS, seen_corruptions
from eval.scoring.plots import corruption_png


def _record(monkeypatch, name: str) -> list:
    calls, original = [], getattr(Axes, name)

    def recording(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Axes, name, recording)
    return calls


def test_corruption_heatmap_writes_accuracy_and_count_in_every_cell_seen_rows_first(monkeypatch):
    texts, yticks, titles = (_record(monkeypatch, n) for n in ("text", "set_yticks", "set_title"))
    seen = seen_corruptions("repmix")
    # accuracy falls with the corruption's index, so the sorted order is known
    figures = {f"{c}/{s}": {"attribution_accuracy": 1 - i / 40 - s / 100, "count": 3 + s}
               for i, c in enumerate(CORRUPTIONS) for s in (1, 2, 3)}
    del figures[f"{CORRUPTIONS[0]}/2"]
    figures["none/0"] = {"attribution_accuracy": 0.9, "count": 100}
    png = corruption_png(figures, seen)
    assert png.startswith(b"\x89PNG")
    cells = [args[2] for args, _ in texts]
    assert len(cells) == len(CORRUPTIONS) * 4  # three severities and "all"
    assert cells.count("no images") == 1
    assert f"{1 - 1 / 40 - 0.03:.2f}\nn=6" in cells
    assert f"{(0.99 * 4 + 0.97 * 6) / 10:.2f}\nn=10" in cells  # the first row pooled
    labels = yticks[0][0][1]
    expected = ([c for c in CORRUPTIONS if c in seen]
                + [f"{c} (unseen)" for c in CORRUPTIONS if c not in seen])
    assert labels == expected
    assert titles[0][0][0].endswith("clean images: 0.90 (n=100)")


def test_corruption_heatmap_of_a_split_without_corruptions_says_so(monkeypatch):
    texts = _record(monkeypatch, "text")
    png = corruption_png({"none/0": {"attribution_accuracy": 0.5, "count": 4}}, ())
    assert png.startswith(b"\x89PNG")
    assert [args[2] for args, _ in texts] == ["no corrupted images in this split"]
