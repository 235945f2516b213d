"""The training loop, run files and config with a tiny stand-in model and stand-in batches."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import ConfigError
from eval import run_files, train
from eval.run_files import RunError
from eval.train_config import load_train_config

CLASSES = 3


@dataclass
class Out:
    logits: torch.Tensor
    embedding: torch.Tensor
    detection: torch.Tensor | None = None


class TinyNet(nn.Module):
    """Linear -> dropout -> linear: dropout makes the loop consume the torch RNG."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, images: torch.Tensor) -> Out:
        emb = self.drop(torch.relu(self.body(images.flatten(1))))
        return Out(logits=self.head(emb), embedding=emb)


def tiny_loss(out: Out, labels: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
    per = torch.stack([F.cross_entropy(out.logits, labels[:, k], reduction="none")
                       for k in range(labels.shape[1])], 1)
    return (per * mix).sum(1).mean()


def _images(gen: torch.Generator, labels: torch.Tensor) -> torch.Tensor:
    # Learnable: the label shifts the mean of the image.
    return torch.randn(len(labels), 3, 2, 2, generator=gen) + labels[:, None, None, None].float()


def parts(model_seed: int = 0, crash_at: int | None = None) -> train.TrainParts:
    torch.manual_seed(model_seed)
    model = TinyNet()

    def train_batches(epoch: int):
        gen = torch.Generator().manual_seed(1000 + epoch)  # seeded per epoch, as eval.data
        for step in range(3):
            if epoch == crash_at and step == 1:
                raise KeyboardInterrupt("stand-in crash in the middle of an epoch")
            labels = torch.randint(0, CLASSES, (4,), generator=gen)
            yield {"image": _images(gen, labels)[:, None], "label": labels[:, None],
                   "mix": torch.ones(4, 1)}

    def val_batches():
        gen = torch.Generator().manual_seed(7)
        labels = torch.arange(6) % CLASSES
        yield {"image": _images(gen, labels), "label": labels}

    return train.TrainParts(model=model, loss=tiny_loss, train_batches=train_batches,
                            val_batches=val_batches, train_count=12, mixing=False)


def config(*sets: str):
    return load_train_config("yu", None, ["runtime.progress=false", "optim.scheduler=step",
                                          "optim.gamma=0.5", "optim.lr=0.05", *sets])


CPU = train.Runtime(torch.device("cpu"), None, False)
INFO = {"model": "yu", "options": {}, "manifest_sha256": "ab" * 32, "backbone_sha256": "scratch"}


def _rows(run: Path) -> list[dict]:
    with open(run / run_files.METRICS) as f:
        return list(csv.DictReader(f))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = config("optim.epochs=4", "early_stop.patience=10")
    straight = tmp_path / "straight"
    train.fit(straight, cfg, parts(), INFO, CPU)

    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train.fit(broken, cfg, parts(crash_at=3), INFO, CPU)
    assert run_files.load_checkpoint(broken, "last").epoch == 2
    # A fresh process: a differently initialised model, then --resume.
    train.fit(broken, cfg, parts(model_seed=99), INFO, CPU, resume=True)

    a = run_files.load_checkpoint(straight, "last", with_state=True)
    b = run_files.load_checkpoint(broken, "last", with_state=True)
    assert a.epoch == b.epoch == 4
    assert a.weights.keys() == b.weights.keys()
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name
    for pid, st in a.state["optimizer"]["state"].items():
        for k, v in st.items():
            assert torch.equal(v, b.state["optimizer"]["state"][pid][k]), (pid, k)
    assert a.state["scheduler"] == b.state["scheduler"]
    keep = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_det_acc", "lr")
    assert [{k: r[k] for k in keep} for r in _rows(straight)] == \
           [{k: r[k] for k in keep} for r in _rows(broken)]
    assert [float(r["lr"]) for r in _rows(straight)] == [0.05, 0.025, 0.0125, 0.00625]


def test_early_stopping_on_a_scripted_metric_sequence(tmp_path, monkeypatch):
    # val_acc at each validation; validating every 2 epochs: epochs 2, 4, 6, 8, ...
    script = iter([0.5, 0.7, 0.6, 0.7, 0.65, 0.9])
    monkeypatch.setattr(train, "evaluate", lambda model, parts, rt: {
        "val_loss": 1.0, "val_acc": next(script), "val_det_acc": 0.5})
    cfg = config("optim.epochs=20", "early_stop.metric=val_acc", "early_stop.patience=3",
                 "early_stop.validate_every=2")
    run = tmp_path / "run"
    stopper = train.fit(run, cfg, parts(), INFO, CPU)
    # best 0.7 at epoch 4; 0.6, 0.7 (not better), 0.65 -> three without improvement at epoch 10
    assert (stopper.best, stopper.best_epoch, stopper.stopped_epoch) == (0.7, 4, 10)
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    assert [r["val_acc"] for r in rows] == ["", "0.5", "", "0.7", "", "0.6", "", "0.7", "", "0.65"]
    assert run_files.load_checkpoint(run, "best").epoch == 4
    last = run_files.load_checkpoint(run, "last", with_state=True)
    assert last.state["early_stop"]["stopped_epoch"] == 10
    # a resumed stopped run does nothing more
    train.fit(run, cfg, parts(), INFO, CPU, resume=True)
    assert len(_rows(run)) == 10


def test_early_stopping_on_val_loss_wants_lower():
    stopper = train.EarlyStopping("val_loss", patience=2)
    assert [stopper.update(e, v) for e, v in enumerate([1.0, 0.8, 0.9, 0.7, 0.75, 0.71], 1)] == \
           [True, True, False, True, False, False]
    assert (stopper.best_epoch, stopper.stopped_epoch) == (4, 6)


def test_run_files_sidecar_and_outputs(tmp_path):
    run = tmp_path / "run"
    train.fit(run, config("optim.epochs=2"), parts(), INFO, CPU)
    side = json.loads((run / "last.json").read_text())
    assert side["epoch"] == 2 and side["manifest_sha256"] == "ab" * 32 and side["model"] == "yu"
    assert set(side["metrics"]) >= {"train_loss", "val_acc", "lr", "images_per_s"}
    assert (run / side["weights"]).suffix == ".safetensors"
    # only the checkpoints a sidecar names are kept
    named = {side["weights"], side["state"], json.loads((run / "best.json").read_text())["weights"]}
    assert {f"checkpoints/{p.name}" for p in (run / "checkpoints").iterdir()} == named
    assert _rows(run)[0].keys() == set(train.METRIC_COLUMNS)
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a damaged weights file is refused, never loaded
    (run / side["weights"]).write_bytes(b"junk")
    with pytest.raises(RunError, match="sha256 differs"):
        run_files.load_checkpoint(run, "last")


def test_training_state_round_trips_without_pickle(tmp_path):
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"params": [0], "betas": (0.9, 0.99), "fused": None}]},
             "rng": {"torch": torch.get_rng_state(), "cuda": []}, "history": [{"epoch": 1}]}
    run_files.save_checkpoint(tmp_path, "last", 1, {"w": torch.zeros(2)}, INFO, {}, state)
    back = run_files.load_checkpoint(tmp_path, "last", with_state=True).state
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert list(back["optimizer"]["state"]) == [0]  # integer keys stay integers
    assert torch.equal(back["optimizer"]["state"][0]["exp_avg"], torch.ones(2))
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])


def test_config_layers_and_errors_name_file_and_key(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("optim:\n  epochs: 5\nper_model:\n  yu:\n    optim:\n      lr: 0.002\n")
    cfg = load_train_config("yu", preset, ["data.batch_size=16"],
                            model_defaults={"lr": 1e-3, "betas": (0.0, 0.99), "step_gamma": 0.85})
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.optim.betas, cfg.data.batch_size) == \
           (5, 0.002, (0.0, 0.99), 16)
    assert (cfg.optim.scheduler, cfg.optim.gamma) == ("step", 0.85)
    assert load_train_config("dct", preset).optim.lr == 1e-3  # another model's section unused

    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrate: 0.1\ndata:\n  crop: 300\n")
    with pytest.raises(ConfigError) as err:
        load_train_config("yu", bad)
    assert f"{bad}: optim.lrate: unknown key" in err.value.messages
    assert any(m.startswith(f"{bad}: ") and "data.crop" in m for m in err.value.messages)
    with pytest.raises(ConfigError, match="early_stop.metric"):
        load_train_config("yu", None, ["early_stop.metric=val_f1"])
    with pytest.raises(ConfigError, match="model.backbone_weights.*file not found"):
        load_train_config("repmix", None, [f"model.backbone_weights={tmp_path / 'none.pth'}"])


def test_existing_run_refused_without_resume(tmp_path):
    train.check_run_folder(tmp_path / "new", resume=False)
    (tmp_path / "empty").mkdir()
    train.check_run_folder(tmp_path / "empty", resume=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(RunError, match="not empty"):
        train.check_run_folder(tmp_path / "full", resume=False)
    with pytest.raises(RunError, match="no last.json"):
        train.check_run_folder(tmp_path / "full", resume=True)


# --- the command on a tiny built benchmark (32 px shards, manifest, classes, dataset_info) ---

SEMANTICS = (("celeba", True), ("cat", False))
SIDE = 32


def _png(image) -> bytes:
    import io

    from PIL import Image
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def build_tiny_benchmark(root: Path, per_cell: dict[str, int] | None = None) -> Path:
    """3 classes x 2 semantics (celeba seen, cat unseen); images whose mean tells the class."""
    import numpy as np

    from benchmark.manifest import MANIFEST_SCHEMA, write_manifest
    from benchmark.shards import ShardSample, write_shard
    per_cell = per_cell or {"train": 6, "val": 2, "test": 2}
    root.mkdir(parents=True)
    rows, n = [], 0
    for split, count in per_cell.items():
        samples = []
        for label, source in enumerate(("real", "sngan", "progan")):
            for sem_label, (semantic, seen) in enumerate(SEMANTICS):
                for j in range(count):
                    row = {c: None for c in MANIFEST_SCHEMA.names}
                    row.update(key=f"{source}-{semantic}-{split}-s{j:04d}", split=split, source=source,
                               label=label, semantic=semantic, semantic_label=sem_label, seen=seen,
                               generator=source, checkpoint_sha256="", sample_index=j, latent_seed=n,
                               origin="", cluster=-1, filled=False,
                               corruption="fog" if split == "test" and j % 2 else "none",
                               severity=3 if split == "test" and j % 2 else 0, corruption_seen=True, corruption_seed=0, sha256="", png_bytes=0,
                               shard=f"{split}-000000.tar", position=0)
                    rng = np.random.default_rng(n)
                    image = np.clip(rng.normal(60 + 70 * label, 20, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
                    samples.append((row, image))
                    n += 1
        samples.sort(key=lambda s: s[0]["key"])
        for pos, (row, _) in enumerate(samples):
            row["position"] = pos
        write_shard(root / f"{split}-000000.tar", [ShardSample(r["key"], _png(i), dict(r)) for r, i in samples])
        rows += [r for r, _ in samples]
    write_manifest(rows, root / "manifest.parquet")
    (root / "classes.json").write_text(json.dumps({
        "classes": ["real", "sngan", "progan"],
        "semantics": [{"name": s, "label": i, "seen": seen} for i, (s, seen) in enumerate(SEMANTICS)]}))
    (root / "dataset_info.json").write_text(json.dumps({
        "resolution": SIDE, "corruptions": {"unseen_set": "repmix", "apply_at": "stored"}}))
    return root


FAST_SETS = ["--set", "runtime.progress=false", "--set", "data.workers=0", "--set", "data.batch_size=4",
             "--set", "data.online_corruption=false", "--set", "optim.epochs=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_benchmark(tmp_path_factory.mktemp("tiny") / "bench")


def test_cli_config_error_exits_2_naming_the_key_and_writes_nothing(tiny, tmp_path, capsys):
    preset = tmp_path / "preset.yaml"
    preset.write_text("optim:\n  epochs: 0\n")
    run = tmp_path / "run"
    assert train.main(["--benchmark", str(tiny), "--model", "yu", "--out", str(run),
                       "--config", str(preset)]) == 2
    assert f"{preset}: optim.epochs" in capsys.readouterr().err
    assert not run.exists()
    assert train.main(["--benchmark", str(tiny), "--model", "yu", "--out", str(run),
                       "--set", "model.options.fmap_bas=8"]) == 2
    assert "fmap_bas" in capsys.readouterr().err
    assert not run.exists()
    assert train.main(["--benchmark", str(tmp_path / "nothing"), "--model", "yu", "--out", str(run)]) == 2
    assert not run.exists()


def test_cli_trains_resumes_and_refuses_a_used_run(tiny, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--benchmark", str(tiny), "--model", "dct", "--out", str(run), *FAST_SETS]
    assert train.main(args) == 0
    info = json.loads((run / "run.json").read_text())
    from eval.benchmark_folder import open_benchmark
    assert info["manifest_sha256"] == open_benchmark(tiny).manifest_sha256
    assert info["backbone_sha256"] == "scratch" and info["options"]["resolution"] == SIDE
    assert (info["device"], info["amp"], info["early_stop"]["metric"]) == ("cpu", "off", "val_loss")
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2]
    # the DCT input statistics were fitted before epoch 1 and are kept with the weights
    weights = run_files.load_checkpoint(run, "best").weights
    fitted = [k for k in weights if k.endswith("fitted")]
    assert fitted and all(bool(weights[k].all()) for k in fitted)
    assert any(k.endswith("mean") and float(weights[k].abs().sum()) > 0 for k in weights)
    assert train.main(args) == 2
    assert "not empty" in capsys.readouterr().err
    # --resume of a finished run changes nothing; with another config it is refused
    before = (run / "last.json").read_text()
    assert train.main([*args, "--resume"]) == 0
    assert (run / "last.json").read_text() == before
    assert train.main([*args, "--resume", "--set", "optim.lr=0.5"]) == 2
    assert "optim.lr" in capsys.readouterr().err


def test_mini_preset_resolves_for_every_model():
    from eval import models
    preset = Path(__file__).resolve().parents[2] / "configs" / "train_mini.yaml"
    for name in models.MODELS:
        cfg = load_train_config(name, preset, model_defaults=models.train_defaults(name))
        assert (cfg.data.resize, cfg.data.crop, cfg.data.eval_size) == (64, 56, 56)
        # the preset shortens every model's published schedule to fit a CPU
        assert cfg.optim.epochs < models.train_defaults(name)["max_epochs"]
    repmix = load_train_config("repmix", preset, model_defaults=models.train_defaults("repmix"))
    assert repmix.model.options["arch"] == "resnet18"
    assert (repmix.optim.scheduler, repmix.optim.gamma, repmix.optim.weight_decay) == ("step", 0.85, 5e-4)
    decentralised = load_train_config("khoo", preset, model_defaults=models.train_defaults("khoo"))
    assert decentralised.model.options == {"arch": "resnet18", "branch_after": "layer3", "secondary_lr": 5e-4}
    assert (decentralised.optim.lr, decentralised.early_stop.metric) == (1e-3, "val_loss")


def test_cli_resume_on_real_data_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    """eval.data's loaders, DCT-CNN and its fitted statistics: crash in epoch 2, --resume."""
    sets = [*FAST_SETS, "--set", "data.online_corruption=true", "--set", "data.corruption_probability=0.5"]
    straight, broken = tmp_path / "straight", tmp_path / "broken"
    assert train.main(["--benchmark", str(tiny), "--model", "dct", "--out", str(straight), *sets]) == 0
    real_epoch = train.train_one_epoch

    def crash_in_epoch_2(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_one_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train.main(["--benchmark", str(tiny), "--model", "dct", "--out", str(broken), *sets])
    monkeypatch.setattr(train, "train_one_epoch", real_epoch)
    assert train.main(["--benchmark", str(tiny), "--model", "dct", "--out", str(broken), *sets,
                       "--resume"]) == 0
    a, b = run_files.load_checkpoint(straight, "last"), run_files.load_checkpoint(broken, "last")
    assert a.epoch == b.epoch == 2
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name


def test_progress_bar_shows_images_per_second_and_loss(tmp_path, capsys):
    train.fit(tmp_path / "run", config("optim.epochs=1", "runtime.progress=true"), parts(), INFO, CPU)
    err = capsys.readouterr().err
    assert "img/s" in err and "loss=" in err and "epoch 1" in err


def test_cuda_asked_without_one_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = config()
    with pytest.raises(ConfigError, match="--device cuda"):
        train.select_runtime(cfg, "cuda")
    assert train.select_runtime(cfg, "auto") == CPU


def test_images_per_second_counts_every_image_of_a_mixed_example(monkeypatch):
    class Mixing(TinyNet):
        def forward(self, images, mix=None):
            return super().forward(images[:, 0] if images.dim() == 5 else images)

    p = parts()
    p.model, p.mixing, p.images_per_example = Mixing(), True, 2
    plain = p.train_batches
    p.train_batches = lambda epoch: ({"image": torch.cat([b["image"]] * 2, 1),
                                      "label": torch.cat([b["label"]] * 2, 1),
                                      "mix": torch.full((4, 2), 0.5)} for b in plain(epoch))
    ticks = iter([10.0, 12.0])  # the epoch's start and end: 2 seconds
    monkeypatch.setattr(train.time, "perf_counter", lambda: next(ticks))
    opt = torch.optim.Adam(p.model.parameters())
    stats = train.train_one_epoch(p.model, p, opt, torch.amp.GradScaler("cpu", enabled=False), CPU,
                                  config("runtime.progress=false"), 1)
    assert stats["images_per_s"] == 3 * 4 * 2 / 2  # 3 batches of 4 pairs in 2 s


def test_cuda_runtime_picks_amp_dtype_and_channels_last(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    cuda = torch.device("cuda")
    assert train.select_runtime(config(), "auto") == train.Runtime(cuda, torch.float16, True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert train.select_runtime(config(), None).amp_dtype == torch.bfloat16
    assert train.select_runtime(config("runtime.amp=off", "runtime.channels_last=false"), "cuda") == \
        train.Runtime(cuda, None, False)
    assert train.select_runtime(config(), "cpu") == CPU  # CPU: fp32, no channels_last


def test_curves_png_is_titled_and_marks_the_best_epoch():
    import numpy as np

    from benchmark.images import decode_image
    from eval.train import plot_curves

    history = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_acc": e / 4,
                "val_acc": e / 5, "val_det_acc": 0.9} for e in range(1, 4)]
    plain = decode_image(plot_curves(history))
    titled = decode_image(plot_curves(history, "repmix: run1"))
    marked = decode_image(plot_curves(history, "repmix: run1", best_epoch=2))
    assert plain.shape == titled.shape == marked.shape
    # the title's ink sits above both panels; the best-epoch line adds grey pixels inside them
    assert (titled[:10] < 128).any() and not (plain[:10] < 128).any()
    assert not np.array_equal(titled, marked)


def test_the_optimiser_takes_every_adam_setting_of_the_config(tmp_path):
    cfg = config("optim.epochs=1", "optim.eps=0.001", "optim.betas=[0.5, 0.9]", "optim.weight_decay=0.01")
    train.fit(tmp_path, cfg, parts(), INFO, CPU)
    group = run_files.load_checkpoint(tmp_path, "last", with_state=True).state["optimizer"]["param_groups"][0]
    assert (group["eps"], tuple(group["betas"]), group["weight_decay"]) == (0.001, (0.5, 0.9), 0.01)
