from matplotlib.axes import Axes

from benchmark.protocol import CORRUPTIONS
from eval.scoring.plots import corruption_png


def test_corruption_plot_gives_every_line_its_own_colour_and_names_the_sample_size(monkeypatch):
    colours, titles = [], []
    plot, set_title = Axes.plot, Axes.set_title

    def recording_plot(self, *args, **kwargs):
        colours.append(kwargs.get("color"))
        return plot(self, *args, **kwargs)

    def recording_title(self, text, *args, **kwargs):
        titles.append(text)
        return set_title(self, text, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    monkeypatch.setattr(Axes, "set_title", recording_title)
    figures = {f"{c}/{s}": {"attribution_accuracy": 0.5, "count": 3 + s}
               for c in CORRUPTIONS for s in (1, 2, 3)}
    figures["none/0"] = {"attribution_accuracy": 0.9, "count": 100}
    png = corruption_png(figures)
    assert png.startswith(b"\x89PNG")
    assert len(colours) == len(CORRUPTIONS) == len(set(colours))
    assert titles == ["Attribution accuracy per corruption (4-6 images per point)"]
