"""eval.attack: I-FGSM stays in the eps-ball and [0, 1], leaves the weights alone, hurts a trained
model more as eps grows; the command writes its JSON, table and plot, and refuses bad input."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eval import attack, models
from eval.models import ModelOutput


class Linear(nn.Module):
    """A linear classifier on the flattened image; returns ModelOutput like every eval model."""

    def __init__(self, side: int = 4, classes: int = 2, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * side * side, classes)
        self.norm = nn.BatchNorm1d(3 * side * side)  # eval mode matters: batch statistics otherwise

    def forward(self, images):
        flat = self.norm(images.flatten(1))
        return ModelOutput(logits=self.fc(flat), embedding=flat)


def two_classes(n: int = 32, side: int = 4, seed: int = 0):
    """[0, 1] images: class 0 darker (mean 0.4), class 1 brighter (mean 0.6), some noise."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = (0.4 + 0.2 * labels.float()[:, None, None, None]
              + 0.05 * torch.randn(n, 3, side, side, generator=gen)).clamp(0, 1)
    return images, labels


def trained_model() -> Linear:
    model = Linear()
    images, labels = two_classes(seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(images * 2 - 1).logits, labels).backward()
        opt.step()
    return model


def test_perturbation_stays_in_the_eps_ball_and_in_0_1():
    model = Linear()
    images, labels = two_classes()
    images[0] = 0.0  # pixels at the bounds: the [0, 1] clip must bite
    images[1] = 1.0
    for eps in (0.01, 8 / 255, 0.3):
        adv = attack.ifgsm(model, images, labels, eps=eps, step=eps, iterations=5)
        assert (adv - images).abs().max() <= eps + 1e-6
        assert adv.min() >= 0.0 and adv.max() <= 1.0
        assert (adv - images).abs().max() > eps / 2  # it did move


def test_step_follows_the_sign_of_the_input_gradient():
    model = Linear()
    images, labels = two_classes()
    x = images.clone().requires_grad_(True)
    model.eval()
    F.cross_entropy(model(x * 2 - 1).logits, labels).backward()
    adv = attack.ifgsm(model, images, labels, eps=0.01, step=0.004, iterations=1)
    expected = (images + 0.004 * x.grad.sign()).clamp(0, 1)
    assert torch.allclose(adv, expected, atol=1e-7)


def test_error_is_zero_at_eps_0_and_grows_with_eps_on_a_trained_model():
    model = trained_model()
    images, labels = two_classes(seed=2)
    eps = [0.0, 2 / 255, 8 / 255, 16 / 255, 32 / 255, 64 / 255]
    result = attack.attack_accuracy(model, [(images[:16], labels[:16]), (images[16:], labels[16:])], eps,
                                    step_factor=2.5, iterations=20)
    assert result["images"] == 32
    assert result["accuracy_before"] == 1.0
    errors = [r["error"] for r in result["by_eps"]]
    assert errors[0] == 0.0
    assert all(b >= a for a, b in pairwise(errors)), errors
    assert errors[-1] > 0.5
    for r in result["by_eps"]:
        assert r["error"] == pytest.approx(result["accuracy_before"] - r["accuracy_after"])


def test_model_weights_and_mode_unchanged():
    model = trained_model()
    model.train()
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm running stats too
    images, labels = two_classes()
    attack.ifgsm(model, images, labels, eps=16 / 255, step=2 / 255, iterations=5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_attack_runs_the_model_in_eval_mode():
    seen = []

    class Spy(Linear):
        def forward(self, images):
            seen.append(self.training)
            return super().forward(images)

    images, labels = two_classes()
    model = Spy()
    model.train()
    attack.ifgsm(model, images, labels, eps=0.1, step=0.05, iterations=2)
    assert seen == [False, False]


def test_dct_cnn_gets_an_input_gradient_through_its_transform():
    model = models.build_model("dct", 3, options={"resolution": 8})
    gen = torch.Generator().manual_seed(0)
    models.fit_input_statistics(model, [torch.rand(8, 3, 8, 8, generator=gen) * 2 - 1])
    images = torch.rand(4, 3, 8, 8, generator=gen)
    labels = torch.tensor([0, 1, 2, 0])
    x = images.clone().requires_grad_(True)
    model.eval()
    loss = F.cross_entropy(model(x * 2 - 1).logits, labels)
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.abs().sum() > 0
    adv = attack.ifgsm(model, images, labels, eps=8 / 255, step=1 / 255, iterations=3)
    assert not torch.equal(adv, images)
    with torch.no_grad():
        assert F.cross_entropy(model(adv * 2 - 1).logits, labels) > loss


@pytest.mark.parametrize("text", ["", "2,x", "-1", "300", "nan", "2,2"])
def test_bad_eps_is_refused_naming_it(text):
    with pytest.raises(attack.AttackError, match="--eps"):
        attack.parse_eps(text)


def test_eps_parses_in_1_255_units():
    assert attack.parse_eps("0,2,4.5") == [0.0, 2.0, 4.5]


# --- the command on a tiny built benchmark and a tiny trained run ---


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from eval import train
    from tests.eval.test_train import FAST_SETS, build_tiny_benchmark

    root = tmp_path_factory.mktemp("attack")
    bench = build_tiny_benchmark(root / "bench", {"train": 2, "val": 1, "test": 2})
    run = root / "run"
    assert train.main(["--benchmark", str(bench), "--model", "dct", "--out", str(run), *FAST_SETS,
                       "--set", "optim.epochs=1"]) == 0
    return bench, run


def test_cli_writes_json_table_and_plot(tiny_run, tmp_path, capsys):
    from eval.benchmark_folder import open_benchmark

    bench, run = tiny_run
    out = tmp_path / "attack"
    assert attack.main(["--run", str(run), "--benchmark", str(bench), "--eps", "0,8,32",
                        "--iterations", "3", "--limit", "5", "--out", str(out)]) == 0
    report = json.loads((out / "attack.json").read_text())
    assert report["model"] == "dct" and report["run"] == str(run)
    assert report["manifest_sha256"] == open_benchmark(bench).manifest_sha256
    assert (report["eps"], report["step_factor"], report["iterations"]) == ([0, 8, 32], 2.5, 3)
    assert report["images"] == 5 and report["split"] == "test"
    assert [r["eps"] for r in report["results"]] == [0, 8, 32]
    assert report["results"][0]["error"] == 0.0
    for r in report["results"]:
        assert r["error"] == pytest.approx(r["accuracy_before"] - r["accuracy_after"])
    table = (out / "attack.md").read_text()
    assert "| Model | eps=0 | eps=8 | eps=32 |" in table and "| dct |" in table
    assert (out / "attack.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, named", [
    (["--eps", "2,abc"], "--eps"),
    (["--eps", "-4"], "--eps"),
    (["--iterations", "0"], "--iterations"),
    (["--limit", "0"], "--limit"),
    (["--step-factor", "0"], "--step-factor"),
])
def test_cli_bad_input_exits_2_naming_it_and_writes_nothing(tiny_run, tmp_path, capsys, args, named):
    bench, run = tiny_run
    out = tmp_path / "attack"
    assert attack.main(["--run", str(run), "--benchmark", str(bench), "--out", str(out), *args]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()


def test_cli_bad_run_and_split_exit_2(tiny_run, tmp_path, capsys):
    bench, run = tiny_run
    out = tmp_path / "attack"
    assert attack.main(["--run", str(tmp_path / "norun"), "--benchmark", str(bench), "--out", str(out)]) == 2
    assert "norun" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        attack.main(["--run", str(run), "--benchmark", str(bench), "--split", "dev", "--out", str(out)])
    assert exc.value.code == 2 and "--split" in capsys.readouterr().err
    assert not out.exists()


def test_loader_batches_back_to_0_1_and_limited_in_order():
    batches = [{"image": torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2),
                "label": torch.tensor([0, 1, 2])},
               {"image": torch.zeros(3, 3, 2, 2), "label": torch.tensor([3, 4, 5])}]
    out = list(attack._batches01(batches, 4, torch.device("cpu")))
    assert [b[1].tolist() for b in out] == [[0, 1, 2], [3]]
    assert out[0][0][:, 0, 0, 0].tolist() == [0.0, 0.5, 1.0]
    assert sum(len(b[1]) for b in attack._batches01(batches, None, torch.device("cpu"))) == 6


def test_cli_split_without_images_exits_2_naming_it(tiny_run, tmp_path, capsys):
    from tests.eval.test_train import build_tiny_benchmark

    _, run = tiny_run
    bench = build_tiny_benchmark(tmp_path / "no_test", {"train": 2, "val": 1})
    out = tmp_path / "attack"
    assert attack.main(["--run", str(run), "--benchmark", str(bench), "--force", "--out", str(out)]) == 2
    assert "--split test" in capsys.readouterr().err
    assert not out.exists()


def test_repmix_is_attacked_on_its_gated_logits_with_mixing_off():
    model = models.build_model("repmix", 3, options={"arch": "resnet18"}, weights=None)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.rand(2, 3, 32, 32, generator=gen), torch.tensor([0, 2])
    adv = attack.ifgsm(model, images, labels, eps=8 / 255, step=4 / 255, iterations=2)
    assert adv.shape == images.shape and not torch.equal(adv, images)
    assert (adv - images).abs().max() <= 8 / 255 + 1e-6
    for k, v in model.state_dict().items():  # BatchNorm statistics included: eval mode
        assert torch.equal(v, before[k]), k
    model.eval()
    with torch.no_grad():
        assert (F.cross_entropy(model(adv * 2 - 1).logits, labels)
                > F.cross_entropy(model(images * 2 - 1).logits, labels))


def test_error_plot_draws_the_clean_accuracy_the_error_is_taken_from(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from eval.attack import plot_error

    lines, axhline = [], Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda self, y, **kw: (lines.append((y, kw["label"])),
                                                                 axhline(self, y, **kw))[1])
    report = {"model": "repmix", "run": "runs/repmix", "iterations": 3, "images": 24, "split": "test",
              "eps": [2.0, 8.0], "results": [{"accuracy_before": 0.625, "error": 0.125},
                                             {"accuracy_before": 0.625, "error": 0.5}]}
    plot_error(report, tmp_path / "attack.png")
    assert lines == [(62.5, "accuracy without attack (62.5%)")]
    assert (tmp_path / "attack.png").read_bytes()[:4] == b"\x89PNG"
