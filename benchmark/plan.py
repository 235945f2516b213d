"""Plan a build from its config, before any pixel is touched: cells, chunks, models, tasks.

Everything here is decided by the config and the folder listings alone, so the plan (and with
it every key) is the same on any machine; the Beam stages only carry it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.config import (CHECKPOINT, DEFAULT_SAMPLE_STEPS, DIFFUSERS, FOLDER, TRAIN, BuildConfig,
                              SourceSpec)
from benchmark.keys import derive_seed
from benchmark.real_sets import RealFile, list_real_files, partition_pools
from benchmark.records import GAN_TRAIN, REAL_CLASS, REFERENCE, ModelRef, RealChunk, TrainTask
from generators.training import GeneratorTraining

# Photos per read batch: large enough to amortise per-element cost, small enough to spread.
REAL_CHUNK = 256


@dataclass(frozen=True)
class Cell:
    """Where one (source, semantic) cell's images come from, decided once from the config."""
    source: str
    semantic: str
    kind: str  # config.FOLDER, DIFFUSERS, CHECKPOINT or TRAIN
    arch: str
    path: str  # the given folder or weights file; for TRAIN, the checkpoint the build writes
    # DIFFUSERS: the sampler settings of the folder (ModelRef.settings); empty otherwise
    settings: tuple[tuple[str, Any], ...] = ()


class LostChunksError(RuntimeError):
    """A stage received fewer chunks than the plan made: the runner lost elements on the way."""


@dataclass(frozen=True)
class ChunkCounts:
    """How many chunks each group must receive, from the plan: a group short of one lost it on
    the way, and a selection over what is left would silently be another benchmark."""
    samples: dict[tuple[str, str], int]  # (source, semantic) -> sample chunks of the cell
    photos: dict[tuple[str, str], int]  # (semantic, role) -> photo chunks

    def check(self, what: str, group: tuple[str, str], arrived: int, kind: str = "samples") -> None:
        """Raise LostChunksError unless `arrived` (distinct chunk ids) is the planned count."""
        expected = (self.samples if kind == "samples" else self.photos).get(group)
        if expected is not None and arrived != expected:
            raise LostChunksError(
                f"{what}: {arrived} of {expected} planned chunks arrived; the runner lost "
                f"elements on the way (README, Runners: 'Beam's Python runner loses elements'); rerun the same command, it "
                f"resumes from the work already stored")


@dataclass(frozen=True)
class BuildPlan:
    real_chunks: tuple[RealChunk, ...]  # Real-class candidates and reference photos
    train_chunks: tuple[RealChunk, ...]  # the rest of the training pool (read only if training)
    models: tuple[ModelRef, ...]  # sources with checkpoints or folders
    train_tasks: tuple[TrainTask, ...]  # sources trained by the build
    roots: dict[str, str]  # semantic -> its photo folder
    cells: dict[tuple[str, str], Cell]  # (source, semantic) -> where its images come from
    # files the folder listings refused (symlink loops, duplicates): rejection rows
    listing_rejections: tuple[dict, ...] = ()

    def chunk_counts(self, chunk_size: int) -> ChunkCounts:
        """The chunks each cell and each photo role is made of (see ChunkCounts)."""
        samples = {(m.source, m.semantic): m.samples for m in self.models}
        samples.update({(t.source, t.semantic): t.samples for t in self.train_tasks})
        photos: dict[tuple[str, str], int] = {}
        for chunk in self.real_chunks:
            photos[(chunk.semantic, chunk.role)] = photos.get((chunk.semantic, chunk.role), 0) + 1
        return ChunkCounts({cell: -(-n // chunk_size) for cell, n in samples.items()}, photos)


def _chunks(semantic: str, role: str, files: tuple[RealFile, ...], first_rank: int) -> list[RealChunk]:
    return [RealChunk(chunk_id=f"real-{semantic}-{role}-c{i // REAL_CHUNK:06d}", semantic=semantic,
                      role=role, files=files[i:i + REAL_CHUNK], first_rank=first_rank + i)
            for i in range(0, len(files), REAL_CHUNK)]


def checkpoint_path(generators_dir: Path, source: str, semantic: str) -> Path:
    return generators_dir / f"{source}-{semantic}.safetensors"


def plan_cells(cfg: BuildConfig, generators_dir: Path) -> dict[tuple[str, str], Cell]:
    """Each (source, semantic) cell's kind and path, in config order."""
    cells = {}
    for source, src in cfg.sources.items():
        for semantic in cfg.semantics:
            kind = src.kind(semantic)
            if kind in (FOLDER, DIFFUSERS):
                path = str(src.folders[semantic])
            elif kind == CHECKPOINT:
                path = str(src.checkpoints[semantic])
            elif kind == TRAIN:
                path = str(checkpoint_path(generators_dir, source, semantic))
            else:  # BuildConfig refuses such a config; reached only by an unvalidated one
                raise ValueError(f"sources.{source}: no checkpoint, folder or train section for {semantic}")
            settings = diffusers_settings(src) if kind == DIFFUSERS else ()
            cells[(source, semantic)] = Cell(source, semantic, kind, src.generator, path, settings)
    return cells


def diffusers_settings(src: SourceSpec) -> tuple[tuple[str, Any], ...]:
    """What the config says about sampling a source's diffusers folders, as sorted pairs: the
    keyword arguments of its family's load_diffusers_folder."""
    steps = DEFAULT_SAMPLE_STEPS if src.sample_steps is None else src.sample_steps
    return (("sample_steps", steps),)


def plan_build(cfg: BuildConfig, generators_dir: Path, folder_counts: dict[tuple[str, str], int],
               checkpoint_sha256: dict[tuple[str, str], str]) -> BuildPlan:
    """`folder_counts` / `checkpoint_sha256` give, per (source, semantic), what the driver read
    off the given folders and weights files (kept out of here so planning does no heavy I/O)."""
    keep = cfg.kept_per_cell
    real_chunks, train_chunks, roots, refused = [], [], {}, []
    for semantic, sem in cfg.semantics.items():
        listing = list_real_files(semantic, sem.path, cfg.real.extensions)
        refused += listing.rejections
        pool = partition_pools(semantic, list(listing.files), seed=cfg.seed, real_class=keep,
                               gan_train_max=cfg.real.gan_train_max, folder=sem.path)
        roots[semantic] = str(sem.path)
        n_ref = min(cfg.selection.reference_count, len(pool.gan_train))
        real_chunks += _chunks(semantic, REAL_CLASS, pool.real_class, 0)
        real_chunks += _chunks(semantic, REFERENCE, pool.gan_train[:n_ref], 0)
        train_chunks += _chunks(semantic, GAN_TRAIN, pool.gan_train[n_ref:], n_ref)

    cells = plan_cells(cfg, generators_dir)
    models, tasks = [], []
    for (source, semantic), cell in cells.items():
        if cell.kind == TRAIN:
            t = cfg.sources[source].train
            training = GeneratorTraining(
                steps=t.steps, batch_size=t.batch_size, lr_g=t.lr_g, lr_d=t.lr_d, n_dis=t.n_dis,
                seed=derive_seed(cfg.seed, "train", f"{source}-{semantic}"))
            tasks.append(TrainTask(source=source, semantic=semantic, arch=cell.arch,
                                   checkpoint=cell.path, training=training,
                                   samples=cfg.sampling.per_model, options=dict(t.options),
                                   checkpoint_every=t.checkpoint_every))
            continue
        samples = cfg.sampling.per_model
        if cell.kind == FOLDER:
            count = folder_counts[(source, semantic)]
            if count < keep:
                raise ValueError(f"sources.{source}.folders.{semantic}: {count} images, fewer "
                                 f"than the {keep} kept per cell")
            samples = min(count, samples)
        weights = cell.path if cell.kind == CHECKPOINT else ""
        folder = "" if cell.kind == CHECKPOINT else cell.path
        models.append(ModelRef(source, semantic, cell.arch, weights, folder,
                               checkpoint_sha256[(source, semantic)], samples, cell.settings))
    return BuildPlan(real_chunks=tuple(real_chunks), train_chunks=tuple(train_chunks),
                     models=tuple(models), train_tasks=tuple(tasks), roots=roots,
                     cells=cells, listing_rejections=tuple(refused))
