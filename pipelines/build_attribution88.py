"""Build an Attribution88-style benchmark: `python -m pipelines.build_attribution88`.

    python -m pipelines.build_attribution88 --config configs/mini.yaml --out out/mini
    python -m pipelines.build_attribution88 --config pipeline.yaml --out /data/a88 \
        --runner PortableRunner --job_endpoint=localhost:8099 --environment_type=LOOPBACK

Unknown flags pass through to Beam as pipeline options. The build runs into a hidden
`.OUT.partial-<config hash>` folder beside OUT and renames it to OUT only once every file is
written and every count checked, so OUT either holds a complete benchmark or does not exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

import generators
from benchmark.atomic import output_error, write_text
from benchmark.config import (CHECKPOINT, DIFFUSERS, FOLDER, TRAIN, BuildConfig, ConfigError,
                              load_config)
from benchmark.dataset_files import (check_counts, rejection_counts, upsampled_photos, write_card,
                                     write_classes, write_dataset_info, write_grids)
from benchmark.manifest import read_manifest
from benchmark.plan import BuildPlan, Cell, plan_build, plan_cells
from benchmark.real_sets import RealSetError
from benchmark.repmix import CSV_FOLDER, write_repmix_csvs
from benchmark.records import CANDIDATE, REAL_CLASS, REFERENCE
from generators.checkpoint import recorded_options
from pipelines.apply_corruptions import ApplyCorruptions
from pipelines.assign_shards import AssignShards
from pipelines.assign_splits import AssignSplits
from pipelines.compute import ComputeSettings
from pipelines.compute_features import ComputeFeatures
from pipelines.feature_handler import build_extractor
from pipelines.materialize_samples import MaterializeSamples
from pipelines.read_real import ReadRealImages
from pipelines.sample_generators import SampleGenerators
from pipelines.select_by_quality import SelectByQuality
from pipelines.stage_metrics import NAMESPACE
from pipelines.train_generators import TrainGenerators
from pipelines.write_records import WriteRecords
from pipelines.write_shards import WriteShards

GENERATORS_DIR = "generators"  # where the build writes the checkpoints it trains, in OUT
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mini.yaml"
log = logging.getLogger("attribution88")


class BuildError(RuntimeError):
    """The build could not produce a complete benchmark; the message says what to fix."""


def compose(p: beam.Pipeline, cfg: BuildConfig, plan: BuildPlan, staging: Path,
            compute: ComputeSettings):
    """Wire the stages; reads like the data flow of DESIGN.md."""
    def read_photos() -> ReadRealImages:
        return ReadRealImages(cfg.resolution, plan.roots, max_pixels=cfg.real.max_pixels,
                              min_side=cfg.real.min_side)

    photos = (p | "CreatePhotoChunks" >> beam.Create(plan.real_chunks)
              | "ReadPhotos" >> read_photos())
    rejections = [photos | "PhotoRejections" >> beam.FlatMap(lambda b: b.rejections)]
    if plan.listing_rejections:
        rejections.append(p | "ListingRejections" >> beam.Create(list(plan.listing_rejections)))
    real_class = photos | "RealClass" >> beam.Filter(lambda b: b.role == REAL_CLASS)
    reference = photos | "Reference" >> beam.Filter(lambda b: b.role == REFERENCE)

    models = [p | "CreateGivenModels" >> beam.Create(plan.models)] if plan.models else []
    if plan.train_tasks:
        extra = (p | "CreateTrainChunks" >> beam.Create(plan.train_chunks)
                 | "ReadTrainPhotos" >> read_photos())
        rejections.append(extra | "TrainPhotoRejections" >> beam.FlatMap(lambda b: b.rejections))
        train_photos = (reference, extra) | "TrainingPool" >> beam.Flatten()
        models.append(train_photos | "TrainGenerators" >> TrainGenerators(
            list(plan.train_tasks), compute))
    sampled = ((models | "AllModels" >> beam.Flatten())
               | "SampleGenerators" >> SampleGenerators(cfg.sampling.chunk_size, cfg.resolution,
                                                        compute, cfg.seed))

    features = ((sampled, reference) | "FeatureInputs" >> beam.Flatten()
                | "ComputeFeatures" >> ComputeFeatures(cfg.selection.extractor, cfg.features, compute,
                                                       tuple(cfg.sources)))
    synthetic_f = features | "SyntheticFeatures" >> beam.Filter(lambda kv: kv[1].role == CANDIDATE)
    reference_f = features | "ReferenceFeatures" >> beam.Filter(lambda kv: kv[1].role == REFERENCE)

    placements = ((synthetic_f, reference_f, real_class)
                  | "SelectByQuality" >> SelectByQuality(cfg.selection, cfg.kept_per_cell, cfg.seed)
                  | "AssignSplits" >> AssignSplits(cfg.splits, cfg.seed)
                  | "AssignShards" >> AssignShards(cfg.seed, cfg.shards.max_samples))
    pixels = (sampled, real_class) | "StoredPixels" >> beam.Flatten()
    manifest_rows = ((pixels, placements)
                     | "MaterializeSamples" >> MaterializeSamples(
                         cfg.classes, {s: v.seen for s, v in cfg.semantics.items()})
                     | "ApplyCorruptions" >> ApplyCorruptions(cfg.corruptions, cfg.seed)
                     | "WriteShards" >> WriteShards(str(staging)))
    all_rejections = tuple(rejections) | "AllRejections" >> beam.Flatten()
    return (manifest_rows, all_rejections) | "WriteRecords" >> WriteRecords(str(staging))


# ----------------------------------------------------------------------------- driver


def _resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BuildError("runtime.device is cuda but no CUDA device is visible")
    return requested


def _model_inputs(cells: dict[tuple[str, str], Cell], resolution: int):
    """Open every given checkpoint and folder once, before any work, so a bad one fails the
    build here with its config key instead of deep inside a worker; returns sha256s and counts."""
    counts, shas = {}, {}
    for (source, semantic), cell in cells.items():
        if cell.kind == TRAIN:
            continue
        try:
            if cell.kind == CHECKPOINT:
                gen = generators.load(cell.arch, checkpoint=Path(cell.path), resolution=resolution)
            else:
                gen = generators.load(cell.arch, folder=Path(cell.path), resolution=resolution)
            if cell.kind == FOLDER:
                counts[(source, semantic)] = gen.count
            shas[(source, semantic)] = gen.checkpoint_sha256
        except generators.GeneratorError as exc:
            where = "checkpoints" if cell.kind == CHECKPOINT else "folders"
            raise BuildError(f"sources.{source}.{where}.{semantic}: {exc}") from None
    return counts, shas


def _check_feature_weights(cfg: BuildConfig) -> str:
    """Load the feature extractor once in the driver (a bad weights file fails here, naming its
    key); returns the weights id recorded in dataset_info.json."""
    from benchmark.features import WeightsError

    try:
        return build_extractor(cfg.selection.extractor, cfg.features, "cpu").weights_id
    except WeightsError as exc:
        raise BuildError(str(exc)) from None


def _check_runner_options(options: PipelineOptions) -> None:
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading":
        raise BuildError("--direct_running_mode=multi_threading lost elements in our tests; "
                         "use in_memory (default) or multi_processing")


def _stage_times(result) -> dict[str, float]:
    """Stage counters for build_stats.json; empty on runners without metrics (DaskRunner).

    Only statistics: the count checks read the manifest, never these.
    """
    try:
        counters = result.metrics().query(
            beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except NotImplementedError:
        return {}
    out = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (value or 0)
    return out


def _software() -> dict[str, str]:
    import cv2
    import numpy
    import pyarrow
    import sklearn
    import torch
    import webdataset

    return {"apache_beam": beam.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "pyarrow": pyarrow.__version__,
            "scikit_learn": sklearn.__version__, "webdataset": webdataset.__version__,
            "python": sys.version.split()[0]}


def _generator_options(cells: dict[tuple[str, str], Cell]) -> dict[tuple[str, str], dict | None]:
    """Each network's options from its sidecar; None for folders and other projects' files."""
    return {key: None if cell.kind in (FOLDER, DIFFUSERS) else recorded_options(cell.path)
            for key, cell in cells.items()}


def _finalize(cfg: BuildConfig, staging: Path, weights_id: str) -> dict:
    manifest = read_manifest(staging / "manifest.parquet")
    problems = check_counts(manifest, cfg)
    if problems:
        raise BuildError("the build lost or doubled samples:\n  " + "\n  ".join(problems[:20]))
    rejections = pq.read_table(staging / "rejections.parquet")
    rejected = rejections.num_rows
    write_classes(staging / "classes.json", cfg)
    write_repmix_csvs(staging / CSV_FOLDER, manifest,
                      {s: spec.seen for s, spec in cfg.semantics.items()})
    grids = write_grids(staging, manifest, cfg.classes)
    write_card(staging / "README.md", cfg, manifest, grids, rejected,
               refused=rejection_counts(rejections), upsampled=upsampled_photos(manifest, cfg))
    write_text(staging / "config.json", cfg.to_json() + "\n")
    # Written last: its presence marks the folder as a complete benchmark.
    return write_dataset_info(staging / "dataset_info.json", cfg, manifest, rejected=rejected,
                              weights_id=weights_id,
                              generator_options=_generator_options(
                                  plan_cells(cfg, staging / GENERATORS_DIR)),
                              software=_software())


def build(cfg: BuildConfig, beam_args: list[str], overwrite: bool = False) -> dict:
    out = cfg.output_dir
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BuildError(f"{out} exists and is not empty; pass --overwrite to replace it")
    staging = out.parent / f".{out.name}.partial-{cfg.fingerprint()[:12]}"
    device = _resolve_device(cfg.runtime.device)
    options = PipelineOptions(beam_args)
    _check_runner_options(options)
    counts, shas = _model_inputs(plan_cells(cfg, staging / GENERATORS_DIR), cfg.resolution)
    weights_id = _check_feature_weights(cfg)
    try:
        plan = plan_build(cfg, staging / GENERATORS_DIR, counts, shas)
    except (RealSetError, ValueError) as exc:
        raise BuildError(str(exc)) from None
    staging.mkdir(parents=True, exist_ok=True)
    log.info("plan: %d photo chunks, %d given models, %d models to train, device %s",
             len(plan.real_chunks), len(plan.models), len(plan.train_tasks), device)
    t0 = time.perf_counter()
    p = beam.Pipeline(options=options)
    compose(p, cfg, plan, staging, ComputeSettings.for_device(device, cfg.runtime))
    result = p.run()
    state = result.wait_until_finish()
    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
        raise BuildError(f"the pipeline ended in state {state}; {staging} holds the partial output")
    stage_metrics = _stage_times(result)
    # The DaskRunner opens a client of its own and leaves it open; closed here, it cannot
    # outlive the cluster and keep reconnecting.
    client = getattr(result, "client", None)
    if client is not None:
        client.close()
    wall_pipeline = time.perf_counter() - t0
    info = _finalize(cfg, staging, weights_id)
    stats = {"pipeline_seconds": round(wall_pipeline, 2),
             "total_seconds": round(time.perf_counter() - t0, 2),
             "metrics": stage_metrics}
    write_text(staging / "build_stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    info["build_stats"] = stats
    return info


_WRAPPED_INPUT = re.compile(r"RealSetError: (.*?)(?: \[while running|$)", re.S)


def input_error(exc: BaseException) -> str | None:
    """The message of a RealSetError (photos that cannot fill what the config asks), raised
    here or by a pipeline worker (Beam re-raises it as a RuntimeError naming it); else None."""
    if isinstance(exc, RealSetError):
        return str(exc)
    match = _WRAPPED_INPUT.search(str(exc))
    return match.group(1).strip() if match else None


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.build_attribution88", description=__doc__.split("\n\n")[0],
        epilog="Other flags (--runner, --direct_num_workers, ...) are Beam pipeline options.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/mini.yaml, the offline demo)")
    parser.add_argument("--out", help="output folder (overrides output_dir in the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set sampling.per_model=1000")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, beam_args = parse_args(argv)
    # force: importing Beam already put a handler on the root logger, which would swallow ours.
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.overrides, output_dir=args.out)
    except ConfigError as exc:
        print("config error:\n  " + "\n  ".join(exc.messages), file=sys.stderr)
        return 2
    try:
        info = build(cfg, beam_args, overwrite=args.overwrite)
    except BuildError as exc:
        print(f"build failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        problem = input_error(exc)
        if problem is not None:
            print(f"build failed: {problem}", file=sys.stderr)
            return 1
        reason = output_error(exc)
        if reason is None:  # a bug, not the disk or the input: keep the traceback
            raise
        # OUT only appears by renaming a finished staging folder, so nothing is there yet
        print(f"build failed: cannot write the output ({reason}). Nothing was written to "
              f"{cfg.output_dir}; work already done stays in the hidden "
              f".{cfg.output_dir.name}.partial-* folder beside it, and a rerun with room to "
              f"write reuses it (delete it to reclaim the space).", file=sys.stderr)
        return 1
    stats = info["build_stats"]
    print(f"built {info['samples']} samples in {len(info['shards'])} shards at {cfg.output_dir} "
          f"({stats['total_seconds']:.0f} s)")
    for name, value in sorted(stats["metrics"].items()):
        if name.endswith("_ms"):
            print(f"  {name[:-3]:<20} {value / 1000:8.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
