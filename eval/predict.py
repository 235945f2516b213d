"""Predict a split of a benchmark with a trained run: `python -m eval.predict`.

    python -m eval.predict --run RUN --benchmark OUT [--split test] --out preds.csv
        [--checkpoint best|last] [--device auto|cpu|cuda] [--force]
        [--embeddings [PATH] [--tsne-points N] [--tsne-seed S]]

Writes a submission that `eval/score.py` accepts unchanged (eval/submission.py): `key`, `pred`
(the class name with the highest final logit), `score_<class>` for every class (the softmax of
the model's final logits; for RepMix the gated attribution logits) and `fake_score`: for RepMix
the detection head's p_fake (softmax of its two logits, index 1), for Yu et al. and DCT-CNN
1 - score_real. Khoo et al.'s decentralised model (khoo) writes its own reading
(eval.models.khoo.submission_scores): score_<source> the source branches' sigmoids, fake_score
the primary detector's sigmoid, score_real = 1 - fake_score, and pred the source with the
highest sigmoid >= 0.5, else real. Every semantic of the split is predicted (seen and unseen).

`--embeddings` also writes, from the same forward pass, each image's embedding (.npz) and a
t-SNE figure by class and by semantic (eval/embeddings.py).

A run trained on another benchmark (its recorded manifest sha256 differs from --benchmark's) is
refused, naming both hashes, unless --force. Errors exit with code 2 and write nothing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmark.atomic import atomic_path
from benchmark.command_line import command_parser
from benchmark.config import ConfigError
from eval import data, embeddings, models, run_files
from eval.benchmark_folder import BenchmarkError, open_benchmark
from eval.models import ModelError
from eval.run_files import RunError
from eval.train import Runtime, _to_device, data_settings, select_runtime
from eval.train_config import config_from_json

PROG = "python -m eval.predict"  # the name in --help; a88 passes its own


@torch.no_grad()
def predict_rows(model: nn.Module, batches: Iterable[dict], classes: tuple[str, ...],
                 rt: Runtime) -> Iterable[dict]:
    """One submission row per image: key, pred, score_<class>..., fake_score."""
    model.eval()
    for batch in batches:
        with torch.autocast(rt.device.type, dtype=rt.amp_dtype or torch.float32,
                            enabled=rt.amp_dtype is not None):
            output = model(_to_device(batch["image"], rt))
        scores, fake, pred = models.read_submission(model, output)
        for i, key in enumerate(batch["key"]):
            row = {"key": key, "pred": classes[int(pred[i])]}
            row.update({f"score_{c}": float(scores[i, j]) for j, c in enumerate(classes)})
            row["fake_score"] = float(fake[i])
            yield row


def write_submission(path: Path, rows: Iterable[dict], classes: tuple[str, ...]) -> int:
    fields = ["key", "pred", *(f"score_{c}" for c in classes), "fake_score"]
    count = 0
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
                count += 1
    return count


def check_benchmark(run: Path, recorded: str, actual: str, force: bool) -> None:
    if recorded != actual and not force:
        raise RunError(f"{run / run_files.RUN_INFO}: the run was trained on benchmark manifest "
                       f"sha256 {recorded}, but --benchmark has {actual}; pass --force to predict "
                       f"anyway")


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    parser = command_parser(prog, __doc__.split("\n")[0], [
        "--run runs/repmix --benchmark out/mini --out preds.csv",
        "--run runs/repmix --benchmark out/mini --out preds.csv --embeddings --tsne-points 2000"])
    parser.add_argument("--run", required=True, type=Path, help="a run folder of eval.train")
    parser.add_argument("--benchmark", required=True, type=Path, help="a built benchmark folder")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", required=True, type=Path, help="the submission CSV")
    parser.add_argument("--checkpoint", default=run_files.BEST, choices=(run_files.BEST, run_files.LAST))
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--force", action="store_true",
                        help="predict even if the run was trained on another benchmark")
    embeddings.add_arguments(parser)
    return parser.parse_args(argv)


@dataclass
class LoadedRun:
    """A run's trained model on its device, with what it was loaded from."""

    model: nn.Module
    name: str
    cfg: Any
    info: dict
    folder: Any
    epoch: int
    rt: Runtime


def load_run(run: Path, benchmark: Path, checkpoint: str = run_files.BEST, device: str | None = None,
             force: bool = False) -> LoadedRun:
    """The run's model with its `checkpoint` weights, checked against `benchmark` (the manifest
    sha256 and classes). Raises ConfigError, RunError, BenchmarkError or ModelError."""
    info = run_files.read_json(run / run_files.RUN_INFO)
    try:
        cfg = config_from_json((run / run_files.CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{run / run_files.CONFIG}: cannot read the run's config ({exc})") from None
    folder = open_benchmark(benchmark)
    check_benchmark(run, info["manifest_sha256"], folder.manifest_sha256, force)
    if tuple(info["classes"]) != folder.classes:
        raise RunError(f"{run / run_files.RUN_INFO}: classes {info['classes']} differ from "
                       f"the benchmark's {list(folder.classes)}")
    ckpt = run_files.load_checkpoint(run, checkpoint)
    rt = select_runtime(cfg, device)
    name = cfg.model.name
    # the options the run resolved (Yu / DCT: the stored resolution); the backbone file is
    # not needed, every weight is in the checkpoint
    model = models.build_model(name, len(folder.classes), options=info["options"], weights=None)
    model.load_state_dict(ckpt.weights)  # strict: every tensor, DCT's input statistics included
    model = model.to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LoadedRun(model, name, cfg, info, folder, ckpt.epoch, rt)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    try:
        extra = embeddings.outputs_from_args(args, args.out)
        loaded = load_run(args.run, args.benchmark, args.checkpoint, args.device, args.force)
        meta = embedding_meta(args, loaded) if extra else None
    except (ConfigError, RunError, BenchmarkError, ModelError, embeddings.EmbeddingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    folder, name, rt = loaded.folder, loaded.name, loaded.rt
    settings = data_settings(loaded.cfg, models.mixes(name))
    batches = data.eval_loader(folder, args.split, settings, input_kind=models.input_kind(name),
                               seen_only=False)
    if extra is None:
        count = write_submission(args.out, predict_rows(loaded.model, batches, folder.classes, rt),
                                 folder.classes)
    else:
        # one forward pass for both; rows held until the embedding files are ready, so a
        # failure writes nothing
        try:
            with embeddings.EmbeddingRecorder(loaded.model) as recorder:
                rows = list(predict_rows(loaded.model, recorder.tap(batches), folder.classes, rt))
            files = embeddings.render(recorder.table(), meta, extra)
        except embeddings.EmbeddingError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        count = write_submission(args.out, rows, folder.classes)
        embeddings.write_files(files)
        print(f"{', '.join(str(p) for p in files)}: embeddings of the {count} images")
    print(f"{args.out}: {count} predictions of {args.split} by {name} (epoch {loaded.epoch})")
    return 0


def embedding_meta(args: argparse.Namespace, loaded: LoadedRun) -> embeddings.Meta:
    semantics = loaded.folder.semantics  # read before predicting: a folder without them fails early
    return embeddings.Meta(
        model=loaded.name, run=str(args.run), checkpoint=args.checkpoint, epoch=loaded.epoch,
        split=args.split, manifest_sha256=loaded.folder.manifest_sha256,
        classes=loaded.folder.classes, semantic_names=tuple(s.name for s in semantics),
        semantic_seen=tuple(s.seen for s in semantics))


if __name__ == "__main__":
    sys.exit(main())
