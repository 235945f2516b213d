"""khoo through the real commands: two stages from one `eval.train`, the primary frozen in stage
2, --resume in either stage, then eval.predict's decentralised reading and eval/score.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval import predict, run_files, train
from eval.models import khoo
from tests.eval.test_train import FAST_SETS, build_tiny_benchmark

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("real", "sngan", "progan")
SETS = [*FAST_SETS, "--set", "model.options.arch=resnet18", "--set", "data.resize=20", "--set", "data.crop=16",
        "--set", "data.eval_size=16", "--set", "model.options.secondary_lr=0.01", "--set", "data.batch_size=9",
        # branches that are the pooled head alone keep these CLI runs short; the copied layers
        # are tested in tests/eval/models/test_khoo.py
        "--set", "model.options.branch_after=layer4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_benchmark(tmp_path_factory.mktemp("tiny") / "bench")


def _train(bench: Path, run: Path, *extra: str) -> int:
    return train.main(["--benchmark", str(bench), "--model", "khoo", "--out", str(run), *SETS, *extra])


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert _train(tiny, run) == 0
    return run


def test_one_command_trains_both_stages_then_predict_and_score(tiny, straight, tmp_path):
    run = straight
    primary = run_files.load_checkpoint(run / run_files.PRIMARY, "best")
    best = run_files.load_checkpoint(run, "best")
    assert primary.sidecar["stage"] == "primary" and best.sidecar["stage"] == "secondary"
    assert best.sidecar["primary"] == {"epoch": primary.epoch, "weights_sha256": primary.sidecar["weights_sha256"]}
    # stage 1 saved the primary alone; stage 2 the whole model, its primary untouched, BatchNorm
    # statistics included, and its branches trained away from their initialisation
    assert set(primary.weights) == {k.removeprefix("primary.") for k in best.weights if k.startswith("primary.")}
    for name, value in primary.weights.items():
        assert torch.equal(best.weights[f"primary.{name}"], value), name
    assert any(k.endswith("running_mean") for k in primary.weights)
    torch.manual_seed(0)
    fresh = khoo.build(3, {"arch": "resnet18", "branch_after": "layer4"}, None).state_dict()
    assert not torch.equal(fresh["branches.0.fc.weight"], best.weights["branches.0.fc.weight"])
    # stage 2 ran at secondary_lr, stage 1 at optim.lr (khoo's default 1e-3)
    lrs = lambda folder: {float(r["lr"]) for r in csv.DictReader(open(folder / "metrics.csv"))}  # noqa: E731
    assert lrs(run / run_files.PRIMARY) == {1e-3} and lrs(run) == {0.01}

    out = tmp_path / "preds.csv"
    assert predict.main(["--run", str(run), "--benchmark", str(tiny), "--out", str(out)]) == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for row in rows:
        sources = torch.tensor([[float(row[f"score_{c}"]) for c in CLASSES[1:]]])
        assert row["pred"] == CLASSES[int(khoo.decide(sources)[0])]
        assert float(row["score_real"]) == pytest.approx(1 - float(row["fake_score"]), abs=1e-6)
    done = subprocess.run([sys.executable, "eval/score.py", "--benchmark", str(tiny), "--submission", str(out),
                           "--bootstrap", "0"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reading = json.loads(done.stdout)["scores"]["decentralised"]
    assert reading["called_real_from"] == "fake_score"
    claimed = [sum(float(r[f"score_{c}"]) >= 0.5 for c in CLASSES[1:]) for r in rows]
    assert reading["multiple_attribution_rate"] == pytest.approx(sum(c > 1 for c in claimed) / 12)


@pytest.mark.parametrize("crash_at", [2, 4])  # epoch 2 of stage 1; epoch 2 of stage 2
def test_resume_in_either_stage_matches_an_uninterrupted_run(tiny, straight, tmp_path, monkeypatch, crash_at):
    broken = tmp_path / "broken"
    real_epoch, calls = train.train_one_epoch, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_at:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        _train(tiny, broken)
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    assert (broken / "last.json").is_file() == (crash_at == 4)
    assert _train(tiny, broken, "--resume") == 0
    for folder in (Path("."), Path(run_files.PRIMARY)):
        a = run_files.load_checkpoint(straight / folder, "last")
        b = run_files.load_checkpoint(broken / folder, "last")
        assert a.epoch == b.epoch == 2
        for name in a.weights:
            assert torch.equal(a.weights[name], b.weights[name]), (folder, name)


def test_train_mini_reads_both_stages_epochs(straight):
    import importlib.util
    spec = importlib.util.spec_from_file_location("train_mini", ROOT / "benchmarks" / "train_mini.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    best = run_files.load_checkpoint(straight, "best").epoch
    first = run_files.load_checkpoint(straight / run_files.PRIMARY, "best").epoch
    assert script.epochs_trained(straight) == {"epochs": "2 + 2", "best_epoch": f"{first} + {best}"}
    assert script.epochs_trained(straight / run_files.PRIMARY)["epochs"] == "2"
