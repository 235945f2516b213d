"""Build an Attribution88-style benchmark (`a88 build`, or `python -m pipelines.build_attribution88`).

    python -m pipelines.build_attribution88 --config configs/mini.yaml --out out/mini
    python -m pipelines.build_attribution88 --config pipeline.yaml --out /data/a88 \
        --runner PortableRunner --job_endpoint=localhost:8099 --environment_type=LOOPBACK

Unknown flags pass through to Beam as pipeline options. The build runs into a hidden
`.OUT.partial-<config hash>` folder beside OUT and renames it to OUT only once every file is
written and every count checked, so OUT either holds a complete benchmark or does not exist.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, PortableOptions,
                                                  StandardOptions)

import generators
from benchmark.atomic import output_error, remove_stale_temporaries, write_text
from benchmark.chunk_cache import CellFeatures, SampledChunks
from benchmark.command_line import command_parser
from benchmark.config import (CHECKPOINT, DIFFUSERS, FOLDER, TRAIN, BuildConfig, ConfigError,
                              load_config)
from benchmark.card_figures import write_distance_histogram, write_grids
from benchmark.croissant import write_croissant
from benchmark.dataset_card import croissant_text, write_card
from benchmark.dataset_files import (check_counts, rejection_counts, upsampled_photos,
                                     write_classes, write_dataset_info)
from benchmark.manifest import read_manifest
from benchmark.plan import BuildPlan, Cell, LostChunksError, plan_build, plan_cells
from benchmark.real_sets import RealSetError
from benchmark.repmix import CSV_FOLDER, write_repmix_csvs
from benchmark.records import CANDIDATE, REAL_CLASS, REFERENCE
from generators.checkpoint import recorded_options
from pipelines.apply_corruptions import ApplyCorruptions
from pipelines.assign_shards import AssignShards
from pipelines.assign_splits import AssignSplits
from pipelines.cached_stage import CACHE_DIR, ResumeCache, cached
from pipelines.compute import ComputeSettings
from pipelines import logs
from pipelines.compute_features import ComputeFeatures, cells_of
from pipelines.feature_handler import build_extractor
from pipelines import data_plane_patch
from pipelines.materialize_samples import MaterializeSamples
from pipelines.read_real import ReadRealImages
from pipelines.sample_generators import SampleChunks, plan_chunks
from pipelines.select_by_quality import SelectByQuality
from pipelines.progress import ProgressReporter, ProgressTail, expected_totals, stage_summary, summary_table
from pipelines.stage_metrics import FLUSH_SECONDS, NAMESPACE, Meter, flush_all
from pipelines.train_generators import TrainGenerators
from pipelines.write_records import WriteRecords
from pipelines.write_shards import WriteShards

GENERATORS_DIR = "generators"  # where the build writes the checkpoints it trains, in OUT
RESUME_SHARDS = "write_shards"  # the resume store's folder of shard completion records
# --resume-cache: which stages' outputs a build keeps for a rerun after a crash. Trained
# generators (OUT/generators) and finished shards (tiny completion records) are always kept.
RESUME_CHOICES = {"all": (SampledChunks.stage, CellFeatures.stage), "features": (CellFeatures.stage,),
                  "none": ()}
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "mini.yaml"
PROG = "python -m pipelines.build_attribution88"
log = logging.getLogger("attribution88")
PROGRESS_DIR = "progress"  # in the staging folder, the stages' progress records; not in OUT


class BuildError(RuntimeError):
    """The build could not produce a complete benchmark; the message says what to fix."""


def compose(p: beam.Pipeline, cfg: BuildConfig, plan: BuildPlan, staging: Path,
            compute: ComputeSettings, resume: ResumeCache | None = None, meter: Meter = Meter()):
    """Wire the stages; reads like the data flow of DESIGN.md. With `resume`, sampled chunks,
    features and finished shards are kept there and reused (pipelines.cached_stage)."""
    def store(stage: str) -> str | None:
        return resume.store(stage) if resume is not None else None

    def read_photos() -> ReadRealImages:
        return ReadRealImages(cfg.resolution, plan.roots, max_pixels=cfg.real.max_pixels,
                              min_side=cfg.real.min_side, meter=meter)

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
            list(plan.train_tasks), compute, meter))
    sample_rules = SampledChunks(cfg.resolution, compute.device, compute.torch_threads)
    sampled = ((models | "AllModels" >> beam.Flatten())
               | "PlanSeedChunks" >> beam.FlatMap(plan_chunks, cfg.sampling.chunk_size, cfg.seed)
               | "ReshuffleChunks" >> beam.Reshuffle()
               | "SampleGenerators" >> cached(SampleChunks(cfg.resolution, compute, meter), sample_rules,
                                              store(sample_rules.stage), meter))

    # One output per batch (references keyed to `real`), so the cache stores each batch once;
    # references then go to every generator cell of their semantic.
    kind = cfg.selection.extractor
    section, weights = ((cfg.features.inception, cfg.features.inception.weights) if kind == "inception"
                        else (cfg.features.lpips, cfg.features.lpips.backbone_weights))
    feature_rules = CellFeatures(kind, section.model_dump(mode="json"), str(weights),
                                 compute.device, compute.torch_threads)
    features = ((sampled, reference) | "FeatureInputs" >> beam.Flatten()
                | "ComputeFeatures" >> cached(ComputeFeatures(kind, cfg.features, compute, meter=meter),
                                              feature_rules, store(feature_rules.stage), meter)
                | "FeaturesPerCell" >> beam.FlatMap(cells_of, tuple(cfg.sources)))
    synthetic_f = features | "SyntheticFeatures" >> beam.Filter(lambda kv: kv[1].role == CANDIDATE)
    reference_f = features | "ReferenceFeatures" >> beam.Filter(lambda kv: kv[1].role == REFERENCE)

    placements = ((synthetic_f, reference_f, real_class)
                  | "SelectByQuality" >> SelectByQuality(cfg.selection, cfg.kept_per_cell, cfg.seed, meter,
                                                           plan.chunk_counts(cfg.sampling.chunk_size))
                  | "AssignSplits" >> AssignSplits(cfg.splits, cfg.seed)
                  | "AssignShards" >> AssignShards(cfg.seed, cfg.shards.max_samples))
    pixels = (sampled, real_class) | "StoredPixels" >> beam.Flatten()
    manifest_rows = ((pixels, placements)
                     | "MaterializeSamples" >> MaterializeSamples(
                         cfg.classes, {s: v.seen for s, v in cfg.semantics.items()})
                     | "ApplyCorruptions" >> ApplyCorruptions(cfg.corruptions, cfg.seed, meter)
                     | "WriteShards" >> WriteShards(str(staging), store(RESUME_SHARDS), meter))
    all_rejections = tuple(rejections) | "AllRejections" >> beam.Flatten()
    return (manifest_rows, all_rejections) | "WriteRecords" >> WriteRecords(str(staging))


# ----------------------------------------------------------------------------- driver


def _workers_are_here(options: PipelineOptions) -> bool:
    """Whether the workers run on this machine and see what the driver sees (a GPU): the
    DirectRunner, or any runner whose SDK workers loop back into this process."""
    runner = (options.view_as(StandardOptions).runner or "DirectRunner").rsplit(".", 1)[-1].lower()
    return (runner.removesuffix("runner") in ("direct", "bundlebaseddirect", "switchingdirect")
            or (options.view_as(PortableOptions).environment_type or "").upper() == "LOOPBACK")


def _resolve_device(requested: str, workers_here: bool = True) -> str:
    """One device for every worker (results differ between devices), decided here. `auto` is
    what this machine sees; on a cluster, `cuda` is left for the workers to check
    (ComputeSettings.apply), since a launcher without a GPU says nothing about them."""
    import torch

    if requested == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if not workers_here:
            log.warning("runtime.device auto is %s on this machine and so on every worker; set "
                        "runtime.device to choose for workers elsewhere", device)
        return device
    if requested == "cuda" and workers_here and not torch.cuda.is_available():
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
                gen = generators.load(cell.arch, folder=Path(cell.path), resolution=resolution,
                                      settings=dict(cell.settings))
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

    from benchmark import __version__

    return {"attribution88": __version__, "apache_beam": beam.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "opencv": cv2.__version__, "pyarrow": pyarrow.__version__,
            "scikit_learn": sklearn.__version__, "webdataset": webdataset.__version__,
            "python": sys.version.split()[0]}


def _generator_options(cells: dict[tuple[str, str], Cell]) -> dict[tuple[str, str], dict | None]:
    """Each network's options from its sidecar, a diffusers folder's sampler settings; None for
    image folders and other projects' files."""
    return {key: None if cell.kind == FOLDER else dict(cell.settings) if cell.kind == DIFFUSERS
            else recorded_options(cell.path) for key, cell in cells.items()}


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
    grids = write_grids(staging, manifest, cfg.classes, cfg.resolution)
    histogram = write_distance_histogram(staging, manifest, cfg.classes, cfg.selection.extractor)
    write_card(staging / "README.md", cfg, manifest, grids=grids, histogram=histogram,
               rejected=rejected, features_weights=weights_id,
               refused=rejection_counts(rejections), upsampled=upsampled_photos(manifest, cfg))
    write_croissant(staging, croissant_text(cfg, manifest), manifest)
    write_text(staging / "config.json", cfg.to_json() + "\n")
    # Written last: its presence marks the folder as a complete benchmark.
    return write_dataset_info(staging / "dataset_info.json", cfg, manifest, rejected=rejected,
                              weights_id=weights_id,
                              generator_options=_generator_options(
                                  plan_cells(cfg, staging / GENERATORS_DIR)),
                              software=_software())


def staging_folders(out: Path) -> list[Path]:
    """Every partial build of OUT beside it, whatever its settings."""
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def _prepare_staging(out: Path, staging: Path, fresh: bool) -> None:
    """Start over (`fresh`) or resume: drop what a killed run left half-written, say what is reused."""
    for other in staging_folders(out):
        if fresh:
            log.info("--fresh: removing %s", other)
            shutil.rmtree(other)
        elif other != staging:
            log.warning("%s holds a partial build of %s with other settings; it is never reused "
                        "(delete it, or pass --fresh, to reclaim the space)", other, out)
    if staging.is_dir():
        removed = remove_stale_temporaries(staging)
        log.info("resuming the partial build in %s (%d half-written files removed)", staging, removed)


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def build(cfg: BuildConfig, beam_args: list[str], overwrite: bool = False, fresh: bool = False,
          resume_cache: str = "all") -> dict:
    out = cfg.output_dir
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise BuildError(f"{out} exists and is not empty; pass --overwrite to replace it")
    # Named by the settings: a changed setting builds in another folder and never reuses this one.
    staging = out.parent / f".{out.name}.partial-{cfg.fingerprint()[:12]}"
    options = PipelineOptions(beam_args)
    _check_runner_options(options)
    device = _resolve_device(cfg.runtime.device, _workers_are_here(options))
    counts, shas = _model_inputs(plan_cells(cfg, staging / GENERATORS_DIR), cfg.resolution)
    weights_id = _check_feature_weights(cfg)
    try:
        plan = plan_build(cfg, staging / GENERATORS_DIR, counts, shas)
    except (RealSetError, ValueError) as exc:
        raise BuildError(str(exc)) from None
    _prepare_staging(out, staging, fresh)
    staging.mkdir(parents=True, exist_ok=True)
    resume = ResumeCache(str(staging / CACHE_DIR),
                         frozenset((*RESUME_CHOICES[resume_cache], RESUME_SHARDS)))
    log.info("plan: %d photo chunks, %d given models, %d models to train, device %s",
             len(plan.real_chunks), len(plan.models), len(plan.train_tasks), device)
    progress = staging / PROGRESS_DIR
    shutil.rmtree(progress, ignore_errors=True)  # a killed run's counts are not this run's
    progress.mkdir()
    t0 = time.perf_counter()
    data_plane_patch.apply()  # before the runner starts its servers
    p = beam.Pipeline(options=options)
    compose(p, cfg, plan, staging, ComputeSettings.for_device(device, cfg.runtime), resume,
            Meter(str(progress)))
    with ProgressReporter(progress, expected_totals(cfg, plan),
                          enabled=logging.getLogger("attribution88").isEnabledFor(logging.INFO)):
        result = p.run()
        state = result.wait_until_finish()
        flush_all()  # counts still pending in this process (in-process workers)
    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
        raise BuildError(f"the pipeline ended in state {state}; {staging} holds the partial output")
    # Runners without metrics (DaskRunner) still have the workers' progress records.
    stage_metrics = _stage_times(result)
    if not stage_metrics:
        time.sleep(2 * FLUSH_SECONDS)  # remote workers' last counts: their flush thread's period
        stage_metrics = ProgressTail(progress).poll()
    shutil.rmtree(progress)
    # The DaskRunner opens a client of its own and leaves it open; closed here, it cannot
    # outlive the cluster and keep reconnecting.
    client = getattr(result, "client", None)
    if client is not None:
        client.close()
    wall_pipeline = time.perf_counter() - t0
    info = _finalize(cfg, staging, weights_id)
    # The resume store is only for a rerun after a crash: a finished build gives its space back.
    cache = staging / CACHE_DIR
    cache_bytes = _folder_bytes(cache) if cache.is_dir() else 0
    shutil.rmtree(cache, ignore_errors=True)
    stats = {"pipeline_seconds": round(wall_pipeline, 2),
             "total_seconds": round(time.perf_counter() - t0, 2),
             "resume_cache_bytes": cache_bytes,
             "metrics": stage_metrics, "stages": stage_summary(stage_metrics)}
    write_text(staging / "build_stats.json", json.dumps(stats, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    info["build_stats"] = stats
    return info


# A RealSetError message is one line. Runners that hand the worker's traceback back as text
# (DirectRunner multi_processing, PortableRunner) chain it after the message: stop at the line end.
_WRAPPED_INPUT = re.compile(r"(?:RealSetError|LostChunksError): (.*?)(?: \[while running|$)", re.M)


def input_error(exc: BaseException) -> str | None:
    """The message of a failure the user acts on, not a bug: a RealSetError (photos that cannot
    fill what the config asks) or a LostChunksError (the runner lost elements), raised here or
    by a pipeline worker (Beam re-raises it as a RuntimeError naming it, the DaskRunner as
    itself); else None."""
    if isinstance(exc, (RealSetError, LostChunksError)):
        return str(exc)
    match = _WRAPPED_INPUT.search(str(exc))
    return match.group(1).strip() if match else None


def parse_args(argv: list[str] | None, prog: str = PROG):
    parser = command_parser(
        prog, __doc__.split("\n\n")[0],
        ["--config configs/mini.yaml --out out/mini "
         "--direct_num_workers=2 --direct_running_mode=multi_processing"],
        note="Other flags (--runner, --direct_num_workers, ...) are Beam pipeline options.")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="YAML config (default: configs/mini.yaml, the offline demo)")
    parser.add_argument("--out", help="output folder (overrides output_dir in the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set sampling.per_model=1000")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete every partial build of OUT (its hidden "
                             ".OUT.partial-* folders) instead of resuming")
    parser.add_argument("--resume-cache", choices=sorted(RESUME_CHOICES), default="all",
                        help="what a build keeps for a rerun after a crash: all (sampled images "
                             "and features), features, or none; deleted when the build succeeds. "
                             "Trained generators and finished shards are always kept")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args, beam_args = parse_args(argv, prog)
    beam_args = logs.worker_options(beam_args, logs.configure(args.quiet))
    if args.config == str(DEFAULT_CONFIG) and not DEFAULT_CONFIG.is_file():
        # configs/ is beside the packages in a source checkout; `pip install .` copies no demo
        print(f"config error:\n  no --config given and the demo config {DEFAULT_CONFIG} is not "
              f"there (the configs ship with a source checkout, not an installed copy): pass "
              f"--config FILE", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config, args.overrides, output_dir=args.out)
    except ConfigError as exc:
        print("config error:\n  " + "\n  ".join(exc.messages), file=sys.stderr)
        return 2
    try:
        info = build(cfg, beam_args, overwrite=args.overwrite, fresh=args.fresh,
                     resume_cache=args.resume_cache)
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
    if stats["stages"]:
        print("stage time summed over workers:\n" + summary_table(stats["stages"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
