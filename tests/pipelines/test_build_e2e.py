"""The real command, end to end, on photos the test makes (and on the shared sample when present)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import pyarrow.parquet as pq
import pytest
import webdataset as wds

import benchmark
import generators
from benchmark.dataset_files import read_pngs
from benchmark.images import decode_image
from benchmark.keys import latent_seed
from pipelines.build_attribution88 import main
from pipelines.export_repmix import main as export_main
from tests.conftest import write_photos

TINY = """
seed: 3
output_dir: out
resolution: 32
semantics:
  faces: {path: photos/faces, seen: true}
  rooms: {path: photos/rooms, seen: false}
sources:
  sngan: {generator: sngan, train: {steps: 3, batch_size: 8, options: {ch: 8}}}
sampling: {per_model: 24, chunk_size: 8}
features: {inception: {weights: random, input_size: 75, precision: fp32, batch_size: 16}}
selection: {clusters: 2, per_cluster: 5, reference_count: 12}
splits: {train: 6, val: 2, test: 2}
shards: {max_samples: 7}
"""


def write_tiny_inputs(root: Path) -> Path:
    """Photos (one of them broken) and the TINY config under `root`; returns the config path."""
    write_photos(root / "photos" / "faces", 40, 0, size=(40, 48))
    write_photos(root / "photos" / "rooms", 40, 1, size=(64, 40))
    (root / "photos" / "rooms" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "cfg.yaml").write_text(TINY)
    return root / "cfg.yaml"


# test_runners and test_verify import these two; an imported fixture is a new instance in each
# module, so they share one folder of the session instead, and the tiny build runs once.
@pytest.fixture(scope="module")
def photo_config(tmp_path_factory) -> Path:
    config = tmp_path_factory.getbasetemp() / "e2e" / "cfg.yaml"
    return config if config.exists() else write_tiny_inputs(config.parent)  # cfg.yaml is written last


@pytest.fixture(scope="module")
def built(photo_config) -> Path:
    out = photo_config.parent / "built"
    if not out.exists():  # OUT only appears once a build is complete
        assert main(["--config", str(photo_config), "--out", str(out), "--quiet"]) == 0
    return out


def _tar_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def test_outputs_and_counts(built):
    names = {p.name for p in built.iterdir()}
    assert {"manifest.parquet", "rejections.parquet", "classes.json", "dataset_info.json",
            "README.md", "config.json", "repmix", "samples-train.png", "build_stats.json"} <= names
    manifest = pq.read_table(built / "manifest.parquet").to_pylist()
    counts = Counter((r["source"], r["semantic"], r["split"]) for r in manifest)
    for source in ("real", "sngan"):
        for semantic in ("faces", "rooms"):
            assert [counts[(source, semantic, s)] for s in ("train", "val", "test")] == [6, 2, 2]
    assert json.loads((built / "classes.json").read_text())["classes"] == ["real", "sngan"]
    assert not list(built.parent.glob(".built.partial-*"))  # the staging folder became OUT


def test_shards_load_with_webdataset_and_match_the_manifest(built):
    manifest = {r["key"]: r for r in pq.read_table(built / "manifest.parquet").to_pylist()}
    seen = 0
    for split in ("train", "val", "test"):
        urls = sorted(str(p) for p in built.glob(f"{split}-*.tar"))
        for sample in wds.WebDataset(urls, shardshuffle=False):
            row = manifest[sample["__key__"]]
            meta = json.loads(sample["json"])
            assert meta == row and row["split"] == split
            assert decode_image(sample["png"]).shape == (32, 32, 3)
            seen += 1
    assert seen == len(manifest) == 40
    sizes = Counter(r["shard"] for r in manifest.values())
    assert sizes["train-000000.tar"] == 7 and sizes["train-000003.tar"] == 3  # 24 = 7+7+7+3


def test_provenance_corruptions_and_flags(built):
    rows = pq.read_table(built / "manifest.parquet").to_pylist()
    for r in rows:
        assert r["seen"] == (r["semantic"] == "faces")
        assert r["label"] == (0 if r["source"] == "real" else 1)
        if r["split"] == "train":
            assert r["corruption"] == "none" and r["severity"] == 0
        else:  # probability 1.0 by default
            assert r["corruption"] != "none" and 1 <= r["severity"] <= 5
        if r["source"] == "real":
            assert r["latent_seed"] == r["sample_index"] == -1
            assert r["origin"].endswith(".jpg") and r["checkpoint_sha256"] == ""
        else:
            assert len(r["checkpoint_sha256"]) == 64 and r["cluster"] in (0, 1)
            assert r["key"] == f"sngan-{r['semantic']}-s{r['sample_index']:08d}"
            assert r["latent_seed"] == latent_seed(3, "sngan", r["semantic"], "sngan", r["sample_index"])
    info = json.loads((built / "dataset_info.json").read_text())
    assert (info["protocol"], info["paper_scale"]) == ("custom", False)
    assert info["features"]["weights"] == "random"
    assert (info["corruptions"]["backend"], info["corruptions"]["apply_at"]) == ("engine", "stored")
    assert {g["semantic"] for g in info["generators"]} == {"faces", "rooms"}
    assert all(g["options"] == {"ch": 8, "dim_z": 128} for g in info["generators"])
    assert info["software"]["attribution88"] == benchmark.__version__  # the tool that built it


def test_manifest_latent_seed_regenerates_the_stored_image(built):
    """The seed in the manifest is the one the image was drawn with: sampling the built
    checkpoint with it gives the stored pixels of an uncorrupted (train) sample."""
    rows = [r for r in pq.read_table(built / "manifest.parquet").to_pylist()
            if r["source"] == "sngan" and r["semantic"] == "faces" and r["split"] == "train"]
    gen = generators.load("sngan", checkpoint=built / "generators" / "sngan-faces.safetensors",
                          resolution=32)
    assert len(rows) == 6 and gen.checkpoint_sha256 == rows[0]["checkpoint_sha256"]
    stored = read_pngs(built, [(r["shard"], r["key"]) for r in rows])
    # One batch of these seeds, not the build's chunks: the same bytes all the same, since
    # networks run fixed-size batches; the build pins one torch thread, and so does this.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = gen.sample([r["latent_seed"] for r in rows])
    finally:
        torch.set_num_threads(threads)
    for r, img in zip(rows, again):
        assert np.array_equal(decode_image(stored[r["key"]]), img), r["key"]


def test_undecodable_photo_is_recorded_and_the_build_goes_on(built):
    rejected = pq.read_table(built / "rejections.parquet").to_pylist()
    assert [(r["key"], r["stage"]) for r in rejected] == [("real-rooms-broken", "read_real")]
    assert "not a decodable image" in rejected[0]["reason"]
    card = (built / "README.md").read_text()
    assert "Refused inputs by reason: not a decodable image 1." in card
    assert "kept and upsampled to it: faces 0 of 10, rooms 0 of 10." in card


def test_repmix_csvs_and_export_for_the_released_code(built, tmp_path):
    """dlabel is the semantic index (seen first), train/val list the seen semantic only, and
    the export writes every CSV path (joined onto -d, as the released loader does)."""
    manifest = {r["key"]: r for r in pq.read_table(built / "manifest.parquet").to_pylist()}
    classes = json.loads((built / "classes.json").read_text())
    assert classes["semantics"] == [{"name": "faces", "label": 0, "seen": True},
                                    {"name": "rooms", "label": 1, "seen": False}]
    assert export_main([str(built), "--dest", str(tmp_path)]) == 0
    for split, count in (("train", 2 * 6), ("val", 2 * 2), ("test", 2 * 2 * 2)):
        with open(built / "repmix" / f"{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == count and list(rows[0]) == ["path", "label", "dlabel"]
        for r in rows:
            m = manifest[r["path"].removeprefix(f"{split}/").removesuffix(".png")]
            assert m["split"] == split and (m["seen"] or split == "test")
            assert (int(r["label"]), int(r["dlabel"])) == (m["label"], m["semantic_label"])
            assert m["semantic_label"] == (0 if m["semantic"] == "faces" else 1)
            data = open(os.path.join(tmp_path, r["path"]), "rb").read()
            assert hashlib.sha256(data).hexdigest() == m["sha256"]
        assert len(list((tmp_path / split).iterdir())) == count


def test_same_config_gives_byte_identical_tars_and_manifest(photo_config, built):
    again = photo_config.parent / "again"
    assert main(["--config", str(photo_config), "--out", str(again), "--quiet"]) == 0
    assert _tar_bytes(again) == _tar_bytes(built)
    for name in ("manifest.parquet", "rejections.parquet", "dataset_info.json", "README.md",
                 "samples-test.png", "selection-distances.png", "croissant.json",
                 "repmix/train.csv"):
        assert (again / name).read_bytes() == (built / name).read_bytes(), name


def test_existing_output_is_not_replaced_without_overwrite(photo_config, built, capsys):
    before = _tar_bytes(built)
    assert main(["--config", str(photo_config), "--out", str(built), "--quiet"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert _tar_bytes(built) == before


def test_config_error_exits_2_and_writes_nothing(photo_config, capsys):
    out = photo_config.parent / "never"
    assert main(["--config", str(photo_config), "--out", str(out), "--set", "splits.train=5"]) == 2
    assert "splits: train+val+test = 9" in capsys.readouterr().err
    assert not out.exists() and not list(photo_config.parent.glob(".never*"))


def test_claiming_the_protocol_with_other_semantics_exits_2_and_writes_nothing(photo_config, capsys):
    out = photo_config.parent / "claims"
    assert main(["--config", str(photo_config), "--out", str(out), "--set", "protocol=attribution88"]) == 2
    err = capsys.readouterr().err
    assert "protocol: semantics not in attribution88: faces, rooms" in err
    assert "protocol: set `protocol: custom` to build a variant" in err
    assert not out.exists() and not list(photo_config.parent.glob(".claims*"))


def test_a_failing_build_leaves_nothing_that_looks_complete(photo_config, capsys):
    out = photo_config.parent / "toomany"
    # The Real class needs more photos than the folder has: planning refuses before any work.
    code = main(["--config", str(photo_config), "--out", str(out), "--quiet",
                 "--set", "selection.per_cluster=30", "--set", "splits.train=56",
                 "--set", "sampling.per_model=60"])
    assert code == 1
    assert "semantics.faces.path" in capsys.readouterr().err
    assert not out.exists()


def test_multi_threading_runner_mode_is_refused(photo_config, capsys):
    out = photo_config.parent / "threads"
    assert main(["--config", str(photo_config), "--out", str(out), "--quiet",
                 "--direct_running_mode=multi_threading"]) == 1
    assert "multi_threading" in capsys.readouterr().err


def test_mini_preset_on_the_shared_photos_at_tiny_counts(shared_real, tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "mini"
    sources = ("progan", "cramergan", "mmdgan", "sngan", "stylegan", "stylegan2", "stylegan3", "ddpm")
    overrides = [*(f"sources.{s}.train.steps=2" for s in sources),
                 "real.gan_train_max=48", "sampling.per_model=24", "sampling.chunk_size=12",
                 "features.inception.input_size=75", "selection.clusters=2",
                 "selection.per_cluster=5", "selection.reference_count=12",
                 "splits={train: 6, val: 2, test: 2}"]
    args = ["--config", str(root / "configs" / "mini.yaml"), "--out", str(out), "--quiet"]
    for o in overrides:
        args += ["--set", o]
    assert main(args) == 0
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert Counter(r["semantic"] for r in rows) == {"celeba": 90, "bedroom": 90}
    assert Counter(r["source"] for r in rows) == {s: 20 for s in ("real", *sources)}
    assert {r["seen"] for r in rows if r["semantic"] == "bedroom"} == {False}
    real = [r for r in rows if r["source"] == "real"]
    assert all(r["origin"].endswith(".jpg") for r in real)
    for sample in wds.WebDataset(sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False):
        assert decode_image(sample["png"]).shape == (64, 64, 3)


def test_yu_lpips_selection_keeps_the_samples_nearest_a_real_photo(photo_config):
    out = photo_config.parent / "yu"
    # Also stores val clean, as the released RepMix train.py wants (it corrupts val itself).
    assert main(["--config", str(photo_config), "--out", str(out), "--quiet",
                 "--set", "selection.method=yu_lpips",
                 "--set", "features.lpips.backbone_weights=random",
                 "--set", "corruptions.val_probability=0"]) == 0
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert len(rows) == 40
    assert {(r["corruption"], r["severity"]) for r in rows if r["split"] == "val"} == {("none", 0)}
    assert all(r["corruption"] != "none" for r in rows if r["split"] == "test")
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["features"] == {"extractor": "lpips", "weights": "random"}
    synthetic = [r for r in rows if r["source"] == "sngan"]
    assert all(r["cluster"] == -1 and r["distance"] >= 0 for r in synthetic)


def _run(photo_config, name, *sets):
    args = ["--config", str(photo_config), "--out", str(photo_config.parent / name), "--quiet"]
    for s in sets:
        args += ["--set", s]
    return main(args)


def test_bad_feature_weights_fail_before_any_work(photo_config, capsys):
    bad = photo_config.parent / "inception.pth"
    bad.write_bytes(b"not a state dict")
    assert _run(photo_config, "badweights", f"features.inception.weights={bad}") == 1
    err = capsys.readouterr().err
    assert "features.inception.weights" in err and str(bad) in err
    assert not list(photo_config.parent.glob("*badweights*"))


def test_corrupt_generator_checkpoint_names_its_key(photo_config, capsys):
    bad = photo_config.parent / "sngan-faces.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert _run(photo_config, "badckpt", f"sources.sngan.checkpoints.faces={bad}") == 1
    err = capsys.readouterr().err
    assert "sources.sngan.checkpoints.faces" in err and "sngan-faces" in err
    assert not list(photo_config.parent.glob("*badckpt*"))


def test_folder_source_adds_a_class_of_pre_generated_images(photo_config):
    for semantic, seed in (("faces", 5), ("rooms", 6)):
        write_photos(photo_config.parent / "pregen" / semantic, 30, seed, size=(36, 36))
    pregen = photo_config.parent / "pregen"  # --set paths resolve against the working directory
    folders = f"{{faces: {pregen}/faces, rooms: {pregen}/rooms}}"
    assert _run(photo_config, "withfolder",
                f"sources.blackbox={{generator: folder, folders: {folders}}}") == 0
    out = photo_config.parent / "withfolder"
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert json.loads((out / "classes.json").read_text())["classes"] == ["real", "sngan", "blackbox"]
    blackbox = [r for r in rows if r["source"] == "blackbox"]
    assert len(blackbox) == 20 and {r["label"] for r in blackbox} == {2}
    assert all(r["generator"] == "folder" and len(r["checkpoint_sha256"]) == 64 for r in blackbox)


def test_the_benchmark_reader_opens_the_built_folder(built):
    """eval.benchmark_folder reads what the build writes: classes, semantics, settings, shards."""
    from eval.benchmark_folder import SemanticInfo, open_benchmark

    folder = open_benchmark(built)
    assert folder.classes == ("real", "sngan")
    assert folder.semantics == (SemanticInfo("faces", 0, True), SemanticInfo("rooms", 1, False))
    assert folder.resolution == 32 and folder.corruption_settings["apply_at"] == "stored"
    digest = hashlib.sha256((built / "manifest.parquet").read_bytes()).hexdigest()
    assert folder.manifest_sha256 == digest
    for split, count in (("train", 24), ("val", 8), ("test", 8)):
        assert folder.shards(split) == sorted(built.glob(f"{split}-*.tar"))
        rows = folder.manifest(["key", "split"], split=split)
        assert rows.column("split").to_pylist() == [split] * count


def test_built_benchmark_scores_a_perfect_submission(built, tmp_path):
    from eval.score import main as score_main

    rows = [r for r in pq.read_table(built / "manifest.parquet").to_pylist() if r["split"] == "test"]
    sub = tmp_path / "perfect.csv"
    sub.write_text("key,pred\n" + "".join(f"{r['key']},{r['source']}\n" for r in rows))
    out = tmp_path / "report.json"
    assert score_main(["--benchmark", str(built), "--submission", str(sub), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["count"] == 8 and report["attribution_accuracy"] == 1.0
    assert set(report["by_semantic"]) == {"seen", "unseen"}


def test_native_architectures_and_diffusers_folders_are_sources(photo_config):
    """A trained ProGAN, a local DDPM folder and a local latent-diffusion folder become classes
    of their own; the diffusion sources' sampler settings are recorded in dataset_info.json."""
    from diffusers import DDIMScheduler

    from generators import ddpm
    from generators.base import isolated_rng
    from generators.diffusers_folder import WEIGHTS_NAME, weights_sha256
    from tests.generators.tiny import save_tiny_ldm

    options = ddpm.parse_options({"ch": 8, "layers_per_block": 1})
    folders = {}
    for semantic, seed in (("faces", 1), ("rooms", 2)):
        with isolated_rng(seed):
            sampler = ddpm.build_generator(32, options)
        folders[semantic] = photo_config.parent / "diffusers" / semantic
        sampler.unet.save_pretrained(folders[semantic])
        DDIMScheduler(**ddpm.scheduler_config(options)).save_pretrained(folders[semantic])
        save_tiny_ldm(photo_config.parent / "ldm" / semantic, seed=seed, latent=16)  # 32 px images
    latent = photo_config.parent / "ldm"
    assert _run(photo_config, "native",
                "sources.progan={generator: progan, train: {steps: 2, batch_size: 8, options: {ch: 8, dim_z: 16}}}",
                f"sources.diffusion={{generator: ddpm, folders: {{faces: {folders['faces']}, "
                f"rooms: {folders['rooms']}}}}}",
                f"sources.latent={{generator: ldm, sample_steps: 2, folders: {{faces: {latent / 'faces'}, "
                f"rooms: {latent / 'rooms'}}}}}") == 0
    out = photo_config.parent / "native"
    assert json.loads((out / "classes.json").read_text())["classes"] == [
        "real", "sngan", "progan", "diffusion", "latent"]
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    for source, arch in (("progan", "progan"), ("diffusion", "ddpm"), ("latent", "ldm")):
        mine = [r for r in rows if r["source"] == source]
        assert len(mine) == 20 and {r["generator"] for r in mine} == {arch}
    info = json.loads((out / "dataset_info.json").read_text())
    options = {g["source"]: g["options"] for g in info["generators"] if g["semantic"] == "faces"}
    assert options["progan"] == {"ch": 8, "dim_z": 16} and options["diffusion"] == {"sample_steps": 50}
    assert options["latent"] == {"sample_steps": 2}
    ldm_sha = {r["checkpoint_sha256"] for r in rows if r["source"] == "latent" and r["semantic"] == "rooms"}
    assert ldm_sha == {weights_sha256(latent / "rooms", [latent / "rooms" / sub / WEIGHTS_NAME
                                                         for sub in ("unet", "vqvae")])}
    unet = {r["checkpoint_sha256"] for r in rows if r["source"] == "diffusion" and r["semantic"] == "faces"}
    assert unet == {generators.sha256_file(folders["faces"] / ddpm.WEIGHTS_NAME)}


# ----------------------------------------------------------------------------- crash and resume


def _cli(config: Path, out: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    """The real command in a process of its own, so the fault hook's SIGKILL kills the build."""
    env = {k: v for k, v in os.environ.items() if k != "A88_FAULT"}
    if fault:
        env["A88_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "pipelines.build_attribution88", "--config",
                           str(config), "--out", str(out)], cwd=Path(__file__).resolve().parents[2],
                          env=env, capture_output=True, text=True, timeout=900)


def _all_files(folder: Path) -> dict[str, bytes]:
    """Every file of a built folder but its run statistics (wall times, counters)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "build_stats.json"}


def test_killed_while_sampling_then_while_writing_shards_resumes_to_the_same_bytes(photo_config, built):
    """SIGKILL after the 3rd of 6 sampled chunks; the rerun of the same command is itself killed
    as it writes the 3rd of 8 shards (before its rename); the third run finishes. Its folder is
    byte for byte the uninterrupted build's, and its counters show the work it did not redo."""
    from pipelines.build_attribution88 import staging_folders

    out = photo_config.parent / "resumed"
    killed = _cli(photo_config, out, "sample_generators:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not out.exists()
    [staging] = staging_folders(out)
    stored = {p: p.stat().st_mtime_ns for p in staging.glob("cache/sample_generators/*/*.entry")}
    assert len(stored) == 3 and not list(staging.glob("*.tar"))

    killed = _cli(photo_config, out, "write_shards:3")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not out.exists() and staging_folders(out) == [staging]
    now = {p: p.stat().st_mtime_ns for p in staging.glob("cache/sample_generators/*/*.entry")}
    assert len(now) == 6 and all(now[p] == t for p, t in stored.items())  # 3 reused, 3 sampled
    finished = sorted(staging.glob("*.tar"))
    assert len(finished) == 2 and all(t.read_bytes() == (built / t.name).read_bytes() for t in finished)
    # the shard being written when the process died exists only under a temporary name
    [half] = staging.glob(".*.tar.*.tmp")
    assert not (staging / (half.name[1:].split(".tar.")[0] + ".tar")).exists()

    done = _cli(photo_config, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not staging_folders(out) and not (out / "cache").exists()
    assert _all_files(out) == _all_files(built)  # no leftover temporary either
    full = json.loads((built / "build_stats.json").read_text())["metrics"]
    resumed = json.loads((out / "build_stats.json").read_text())["metrics"]
    assert "sampled" not in resumed and resumed["sampled_from_cache"] == full["sampled"] == 48
    assert "features_candidate" not in resumed and "features_reference" not in resumed
    assert resumed["features_from_cache"] == full["features_candidate"] + full["features_reference"]
    assert resumed["shards_kept"] == 2 and resumed["shards_written"] == full["shards_written"] - 2
    assert resumed["written"] < full["written"] == 40
    assert resumed["generators_reused"] == 2 and "generators_trained" not in resumed
