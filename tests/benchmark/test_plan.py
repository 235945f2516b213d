"""benchmark.plan: every cell's kind settled once, training settings in one GeneratorTraining."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark.config import CHECKPOINT, DIFFUSERS, FOLDER, TRAIN, BuildConfig
from benchmark.dataset_files import check_counts
from benchmark.keys import derive_seed
from benchmark.manifest import MANIFEST_SCHEMA
from benchmark.plan import (REAL_CHUNK, ChunkCounts, LostChunksError, checkpoint_path, plan_build,
                            plan_cells)
from benchmark.records import GAN_TRAIN, REAL_CLASS, REFERENCE
from generators.training import GeneratorTraining
from tests.conftest import write_photos


def _config(root: Path, **sources) -> BuildConfig:
    write_photos(root / "faces", 30, 0, size=(40, 40))
    write_photos(root / "rooms", 30, 1, size=(40, 40))
    for sem in ("faces", "rooms"):
        (root / "pregen" / sem).mkdir(parents=True, exist_ok=True)
    (root / "given.safetensors").write_bytes(b"x")
    return BuildConfig.model_validate({
        "output_dir": str(root / "out"), "resolution": 32, "seed": 4,
        "semantics": {"faces": {"path": str(root / "faces"), "seen": True},
                      "rooms": {"path": str(root / "rooms"), "seen": False}},
        "sources": sources or {
            "trained": {"generator": "sngan", "train": {"steps": 2, "batch_size": 4, "n_dis": 2,
                                                        "options": {"ch": 8}}},
            "given": {"generator": "sngan", "checkpoints": {"faces": str(root / "given.safetensors")},
                      "train": {"steps": 1}},
            "blackbox": {"generator": "folder", "folders": {s: str(root / "pregen" / s)
                                                            for s in ("faces", "rooms")}},
            "diffusion": {"generator": "ddpm", "folders": {"faces": str(root / "pregen" / "faces"),
                                                           "rooms": str(root / "pregen" / "rooms")}},
            "latent": {"generator": "ldm", "sample_steps": 7,
                       "folders": {s: str(root / "pregen" / s) for s in ("faces", "rooms")}},
        },
        "sampling": {"per_model": 8},
        "features": {"inception": {"weights": "random"}},
        "selection": {"clusters": 1, "per_cluster": 4, "reference_count": 5},
        "splits": {"train": 2, "val": 1, "test": 1},
    })


def test_each_cell_gets_its_kind_and_path_once(tmp_path):
    cfg = _config(tmp_path)
    cells = plan_cells(cfg, tmp_path / "gen")
    kinds = {key: c.kind for key, c in cells.items()}
    assert kinds == {("trained", "faces"): TRAIN, ("trained", "rooms"): TRAIN,
                     ("given", "faces"): CHECKPOINT, ("given", "rooms"): TRAIN,
                     ("blackbox", "faces"): FOLDER, ("blackbox", "rooms"): FOLDER,
                     ("diffusion", "faces"): DIFFUSERS, ("diffusion", "rooms"): DIFFUSERS,
                     ("latent", "faces"): DIFFUSERS, ("latent", "rooms"): DIFFUSERS}
    assert cells[("given", "rooms")].path == str(checkpoint_path(tmp_path / "gen", "given", "rooms"))
    assert cells[("given", "faces")].path == str(tmp_path / "given.safetensors")
    assert cells[("blackbox", "rooms")].arch == "folder"


def test_plan_build_carries_the_kinds_into_models_and_tasks(tmp_path):
    cfg = _config(tmp_path)
    keys = [k for k, c in plan_cells(cfg, tmp_path / "gen").items() if c.kind != TRAIN]
    counts = {k: 6 for k in keys if k[0] == "blackbox"}
    plan = plan_build(cfg, tmp_path / "gen", counts, {k: f"sha-{k[0]}-{k[1]}" for k in keys})
    assert [(t.source, t.semantic) for t in plan.train_tasks] == [
        ("trained", "faces"), ("trained", "rooms"), ("given", "rooms")]
    task = plan.train_tasks[0]
    assert task.training == GeneratorTraining(steps=2, batch_size=4, n_dis=2,
                                              seed=derive_seed(4, "train", "trained-faces"))
    assert task.options == {"ch": 8}
    models = {(m.source, m.semantic): m for m in plan.models}
    assert models[("given", "faces")].checkpoint.endswith("given.safetensors")
    assert models[("given", "faces")].folder == ""
    assert models[("blackbox", "faces")].samples == 6  # a folder gives what it holds
    assert models[("diffusion", "rooms")].checkpoint == "" and models[("diffusion", "rooms")].samples == 8
    # A diffusers folder's sampler settings travel with its models; other models have none.
    assert models[("latent", "rooms")].settings == (("sample_steps", 7),)
    assert models[("diffusion", "rooms")].settings == (("sample_steps", 50),)
    assert models[("given", "faces")].settings == () and models[("blackbox", "faces")].settings == ()
    assert plan.cells == plan_cells(cfg, tmp_path / "gen")
    # Pools: the Real class and references read up front, the rest only for training.
    roles = {c.role for c in plan.real_chunks}
    assert roles == {REAL_CLASS, REFERENCE} and {c.role for c in plan.train_chunks} == {GAN_TRAIN}
    ref = [c for c in plan.real_chunks if c.role == REFERENCE and c.semantic == "faces"]
    assert sum(len(c.files) for c in ref) == 5
    assert all(len(c.files) <= REAL_CHUNK for c in plan.real_chunks + plan.train_chunks)


def test_chunk_counts_are_the_chunks_the_plan_makes(tmp_path):
    from pipelines.sample_generators import plan_chunks

    cfg = _config(tmp_path)
    keys = [k for k, c in plan_cells(cfg, tmp_path / "gen").items() if c.kind != TRAIN]
    plan = plan_build(cfg, tmp_path / "gen", {k: 7 for k in keys if k[0] == "blackbox"},
                      {k: "sha" for k in keys})
    counts = plan.chunk_counts(3)
    # 8 samples in chunks of 3: 3 chunks; the folder gives its 7 images, also 3; trained cells too
    assert counts.samples == {cell: 3 for cell in plan_cells(cfg, tmp_path / "gen")}
    for model in plan.models:
        assert len(plan_chunks(model, 3, cfg.seed)) == counts.samples[(model.source, model.semantic)]
    assert counts.photos == {(c.semantic, c.role): 1 for c in plan.real_chunks}
    assert plan.chunk_counts(8).samples[("trained", "faces")] == 1


def test_a_group_short_of_a_chunk_is_a_lost_chunk_error():
    counts = ChunkCounts({("sngan", "faces"): 3}, {("faces", REFERENCE): 2})
    counts.check("cell sngan-faces", ("sngan", "faces"), 3)
    counts.check("unplanned", ("progan", "faces"), 1)  # groups the plan does not know: not checked
    with pytest.raises(LostChunksError, match="cell sngan-faces: 2 of 3 planned chunks arrived"):
        counts.check("cell sngan-faces", ("sngan", "faces"), 2)
    with pytest.raises(LostChunksError, match="refs: 1 of 2 planned chunks"):
        counts.check("refs", ("faces", REFERENCE), 1, kind="photos")


def test_a_folder_with_fewer_images_than_kept_is_refused_naming_its_key(tmp_path):
    cfg = _config(tmp_path)
    keys = [k for k, c in plan_cells(cfg, tmp_path / "gen").items() if c.kind != TRAIN]
    counts = {k: 3 for k in keys if k[0] == "blackbox"}
    with pytest.raises(ValueError, match=r"sources.blackbox.folders.faces: 3 images"):
        plan_build(cfg, tmp_path / "gen", counts, {k: "sha" for k in keys})


def _manifest(cfg: BuildConfig, drop: int = 0, extra: list[tuple[str, str, str]] = ()):
    import pyarrow as pa

    rows = [{"key": f"{c}-{s}-{split}-{i}", "source": c, "semantic": s, "split": split}
            for c in cfg.classes for s in cfg.semantics
            for split, n in cfg.splits.counts().items() for i in range(n)]
    rows = rows[drop:] + [{"key": f"x{i}", "source": c, "semantic": s, "split": sp}
                          for i, (c, s, sp) in enumerate(extra)]
    return pa.Table.from_pylist(rows, schema=pa.schema([MANIFEST_SCHEMA.field(n) for n in
                                                        ("key", "source", "semantic", "split")]))


def test_check_counts_names_every_wrong_cell(tmp_path):
    cfg = _config(tmp_path)
    assert check_counts(_manifest(cfg), cfg) == []
    assert check_counts(_manifest(cfg, drop=1), cfg) == ["real/faces/train: 1 samples, expected 2"]
    problems = check_counts(_manifest(cfg, extra=[("real", "faces", "val"), ("ghost", "faces", "val")]), cfg)
    assert problems == ["real/faces/val: 2 samples, expected 1",
                        "ghost/faces/val: 1 samples in a cell the config does not have"]
