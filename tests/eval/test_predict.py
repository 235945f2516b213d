"""eval.predict: the submission it writes is one eval/score.py accepts; other benchmarks refused."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
from eval import predict
from eval.run_files import RunError
from eval.train import Runtime

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("real", "sngan", "progan")
CPU = Runtime(torch.device("cpu"), None, False)


@dataclass
class Out:
    logits: torch.Tensor
    embedding: torch.Tensor
    detection: torch.Tensor | None = None


class Fixed(nn.Module):
    """Logits (and detection logits) read from the image's first pixels."""

    def __init__(self, detection: bool):
        super().__init__()
        self.detection = detection

    def forward(self, images):
        flat = images.flatten(1)
        return Out(logits=flat[:, :3], embedding=flat,
                   detection=flat[:, 3:5] if self.detection else None)


def make_benchmark(folder: Path, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        row = {k: None for k in MANIFEST_SCHEMA.names}
        label = i % 3
        row.update(key=f"{CLASSES[label]}-faces-s{i:08d}", split="test", label=label,
                   source=CLASSES[label], seen=i % 2 == 0, corruption="none", severity=0,
                   corruption_seen=True, shard="test-000000.tar", position=i)
        rows.append(row)
    folder.mkdir()
    write_manifest(rows, folder / "manifest.parquet")
    (folder / "classes.json").write_text(json.dumps({"classes": list(CLASSES)}))
    return rows


def batches(rows: list[dict], size: int = 4):
    gen = torch.Generator().manual_seed(0)
    for i in range(0, len(rows), size):
        part = rows[i:i + size]
        yield {"image": torch.randn(len(part), 3, 2, 2, generator=gen),
               "label": torch.tensor([r["label"] for r in part]), "key": [r["key"] for r in part]}


@pytest.mark.parametrize("detection", [False, True])
def test_predict_score_round_trip(tmp_path, detection):
    rows = make_benchmark(tmp_path / "bench", 10)
    out = tmp_path / "preds.csv"
    n = predict.write_submission(out, predict.predict_rows(Fixed(detection), batches(rows), CLASSES, CPU),
                                 CLASSES)
    assert n == 10
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert list(written[0]) == ["key", "pred", "score_real", "score_sngan", "score_progan", "fake_score"]
    images = torch.cat([b["image"] for b in batches(rows)]).flatten(1)
    scores = torch.softmax(images[:, :3], 1)
    fake = torch.softmax(images[:, 3:5], 1)[:, 1] if detection else 1 - scores[:, 0]
    for i, row in enumerate(written):
        assert row["key"] == rows[i]["key"]
        assert row["pred"] == CLASSES[int(scores[i].argmax())]
        assert [float(row[f"score_{c}"]) for c in CLASSES] == pytest.approx(scores[i].tolist(), abs=1e-7)
        assert float(row["fake_score"]) == pytest.approx(float(fake[i]), abs=1e-7)
    done = subprocess.run([sys.executable, "eval/score.py", "--benchmark", str(tmp_path / "bench"),
                           "--submission", str(out), "--bootstrap", "0"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] == 10
    expected = sum(CLASSES[int(scores[i].argmax())] == CLASSES[r["label"]] for i, r in enumerate(rows))
    assert report["attribution_accuracy"] == pytest.approx(expected / 10)


def test_another_benchmark_is_refused_naming_both_hashes(tmp_path):
    predict.check_benchmark(tmp_path, "a" * 64, "a" * 64, force=False)
    with pytest.raises(RunError) as err:
        predict.check_benchmark(tmp_path, "a" * 64, "b" * 64, force=False)
    assert "a" * 64 in str(err.value) and "b" * 64 in str(err.value)
    predict.check_benchmark(tmp_path, "a" * 64, "b" * 64, force=True)


def test_a_failed_prediction_leaves_no_file(tmp_path):
    def broken():
        yield {"key": "k", "pred": "real", "score_real": 1.0, "score_sngan": 0.0,
               "score_progan": 0.0, "fake_score": 0.0}
        raise RuntimeError("reader failed")

    with pytest.raises(RuntimeError):
        predict.write_submission(tmp_path / "p.csv", broken(), CLASSES)
    assert list(tmp_path.iterdir()) == []


# --- train -> predict -> score with the real commands on a tiny built benchmark ---

@pytest.mark.parametrize("model, sets", [
    ("repmix", ["optim.epochs=1", "model.options.arch=resnet18", "model.options.embed_dim=16", "data.resize=36",
                "data.crop=32", "data.eval_size=32"]),
    ("yu", ["model.options.fmap_base=32", "model.options.fmap_max=16"]),
])
def test_cli_train_predict_score(tmp_path, model, sets, capsys):
    from eval import train
    from tests.eval.test_train import FAST_SETS, build_tiny_benchmark

    bench = build_tiny_benchmark(tmp_path / "bench")
    run = tmp_path / "run"
    if model == "repmix":  # a local backbone file (here a random torchvision ResNet18 state dict)
        import torchvision
        from safetensors.torch import save_file

        from benchmark.atomic import sha256_file
        backbone = tmp_path / "resnet18.safetensors"
        save_file(torchvision.models.resnet18().state_dict(), str(backbone))
        sets = [*sets, f"model.backbone_weights={backbone}"]
    extra = [a for s in sets for a in ("--set", s)]
    assert train.main(["--benchmark", str(bench), "--model", model, "--out", str(run),
                       *FAST_SETS, *extra]) == 0
    info = json.loads((run / "run.json").read_text())
    if model == "repmix":
        assert (info["backbone_weights"], info["backbone_sha256"]) == (str(backbone), sha256_file(backbone))
    else:
        assert info["backbone_sha256"] == "scratch"
    out = tmp_path / "preds.csv"
    assert predict.main(["--run", str(run), "--benchmark", str(bench), "--out", str(out)]) == 0
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert len(written) == 12  # every test image: 3 classes x 2 semantics (seen and unseen) x 2
    for row in written:
        scores = [float(row[f"score_{c}"]) for c in CLASSES]
        assert sum(scores) == pytest.approx(1, abs=1e-5)
        if model != "repmix":
            assert float(row["fake_score"]) == pytest.approx(1 - scores[0], abs=1e-6)
    done = subprocess.run([sys.executable, "eval/score.py", "--benchmark", str(bench),
                           "--submission", str(out), "--bootstrap", "0"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["count"] == 12
    assert report["by_semantic"]["seen"]["count"] == report["by_semantic"]["unseen"]["count"] == 6

    # another benchmark (one more test image: another manifest) is refused, naming both hashes
    other = build_tiny_benchmark(tmp_path / "other", {"train": 6, "val": 2, "test": 3})
    capsys.readouterr()
    refused = tmp_path / "refused.csv"
    assert predict.main(["--run", str(run), "--benchmark", str(other), "--out", str(refused)]) == 2
    err = capsys.readouterr().err
    from eval.benchmark_folder import open_benchmark
    assert open_benchmark(bench).manifest_sha256 in err and open_benchmark(other).manifest_sha256 in err
    assert not refused.exists()
    assert predict.main(["--run", str(run), "--benchmark", str(other), "--out", str(refused),
                         "--force"]) == 0


def test_train_mini_script_on_a_tiny_benchmark(tmp_path):
    from tests.eval.test_train import FAST_SETS, build_tiny_benchmark

    bench = build_tiny_benchmark(tmp_path / "bench")
    sets = [FAST_SETS[i + 1] for i in range(0, len(FAST_SETS), 2)]
    done = subprocess.run([sys.executable, "benchmarks/train_mini.py", "--benchmark", str(bench),
                           "--work", str(tmp_path / "work"), "--models", "yu,dct", "--bootstrap", "20",
                           *(a for s in [*sets, "optim.epochs=1"] for a in ("--set", s))],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    assert "| | Yu et al. | DCT-CNN | chance |" in table
    for label in ("attribution accuracy % (95% CI)", "NMI", "detection accuracy %",
                  "seen semantics", "unseen semantics", "clean images", "corrupted images",
                  "worst corruption 1: fog", "train wall time", "| epochs trained (best) | 1 (1) | 1 (1) |",
                  "macro ROC-AUC %", "multiple-attribution rate %", "self-contradiction rate %",
                  "unclaimed-fake rate %"):
        assert label in table, label
    # chance beside attribution accuracy: 3 balanced classes
    attribution = next(line for line in table.splitlines() if line.startswith("| attribution accuracy"))
    assert attribution.endswith("| 33.3 |")
    for model in ("yu", "dct"):
        assert (tmp_path / "work" / model / "report.json").is_file()
    report = json.loads((tmp_path / "work" / "yu" / "report.json").read_text())["scores"]
    rate = next(line for line in table.splitlines() if line.startswith("| self-contradiction"))
    assert rate.split(" | ")[1] == f"{100 * report['decentralised']['self_contradiction_rate']:.1f}"


def test_models_without_their_own_reading_keep_softmax_scores_bit_for_bit():
    from eval.models import read_submission
    gen = torch.Generator().manual_seed(4)
    logits, detection = torch.randn(5, 3, generator=gen), torch.randn(5, 2, generator=gen)
    for out in (Out(logits, logits), Out(logits, logits, detection)):
        scores, fake, pred = read_submission(nn.Identity(), out)
        expected = torch.softmax(logits, dim=1)
        assert torch.equal(scores, expected) and torch.equal(pred, expected.argmax(1))
        p_fake = torch.softmax(detection, 1)[:, 1] if out.detection is not None else 1.0 - expected[:, 0]
        assert torch.equal(fake, p_fake)
