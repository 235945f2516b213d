from pathlib import Path

import pytest

from benchmark.config import ConfigError, load_config
from tests.conftest import write_photos

ROOT = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    write_photos(tmp_path / "photos" / "a", 4, 0)
    write_photos(tmp_path / "photos" / "b", 4, 1)
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


BASE = """
output_dir: out
semantics:
  faces: {path: photos/a, seen: true}
  rooms: {path: photos/b, seen: false}
sources:
  sngan: {generator: sngan, train: {steps: 2}}
sampling: {per_model: 40, chunk_size: 8}
features: {inception: {weights: random}}
selection: {clusters: 2, per_cluster: 5}
splits: {train: 6, val: 2, test: 2}
"""


def test_valid_config_resolves_paths_against_its_file(tmp_path):
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.semantics["faces"].path == (tmp_path / "photos" / "a").resolve()
    assert cfg.output_dir == (tmp_path / "out").resolve()
    assert cfg.classes == ("real", "sngan")
    assert cfg.kept_per_cell == 10


@pytest.mark.parametrize("text, expected", [
    (BASE + "bogus: 1\n", "cfg.yaml: bogus: unknown key"),
    (BASE.replace("per_model: 40", "per_model: many"), "sampling.per_model"),
    (BASE.replace("photos/a", "photos/missing"), "semantics.faces.path: folder not found"),
    (BASE.replace("train: 6", "train: 7"), "splits: train+val+test = 11"),
    (BASE.replace("sngan: {generator: sngan, train: {steps: 2}}", "sngan: {generator: sngan}"),
     "sources.sngan.checkpoints.faces: give a checkpoint"),
    (BASE.replace("{weights: random}", "{weights: nowhere.pth}"), "features.inception.weights: file not found"),
    (BASE.replace("generator: sngan", "generator: biggan"), "sources.sngan.generator"),
    (BASE.replace("faces:", "Faces-1:"), "semantics.Faces-1: names use"),
    (BASE.replace("per_model: 40", "per_model: 4"), "sampling.per_model: 4 is fewer than the 10 kept"),
    (BASE.replace("train: {steps: 2}}", "folders: {faces: photos/a}}"),
     "sources.sngan.folders.faces: generator sngan reads checkpoints, not folders"),
    (BASE.replace("generator: sngan, train: {steps: 2}}", "generator: ddpm, folders: {faces: photos/a}}"),
     "sources.sngan.checkpoints.rooms: give a checkpoint"),
    (BASE.replace("generator: sngan, train: {steps: 2}}", "generator: ldm, folders: {faces: photos/a}}"),
     "sources.sngan.folders.rooms: path required"),
    (BASE.replace("generator: sngan, train: {steps: 2}}",
                  "generator: ldm, folders: {faces: photos/a, rooms: photos/b}, train: {steps: 2}}"),
     "sources.sngan.train: generator ldm reads folders only"),
    (BASE.replace("train: {steps: 2}}", "train: {steps: 2}, sample_steps: 10}"),
     "sources.sngan.sample_steps: applies to diffusers folders (ddpm, ldm), not generator sngan"),
    (BASE.replace("generator: sngan, train: {steps: 2}}",
                  "generator: ldm, folders: {faces: photos/a, rooms: photos/b}, sample_steps: 0}"),
     "sources.sngan.sample_steps"),
    (BASE.replace("output_dir: out", "output_dir: photos/a"), "output_dir: "),
    (BASE.replace("output_dir: out", "output_dir: photos/a/built"), "lies inside the input folder semantics.faces.path"),
    (BASE.replace("output_dir: out", "output_dir: photos"), "holds the input folder semantics.faces.path"),
    (BASE.replace("chunk_size: 8", "chunk_size: 0"), "sampling.chunk_size"),
    (BASE.replace("train: 6", "train: -1"), "splits.train"),
    (BASE + "corruptions: {unseen_set: snowy}\n", "corruptions.unseen_set"),
    (BASE + "corruptions: {severities: [0, 6]}\n", "severities must be distinct values in 1..5"),
    (BASE + "real: {min_side: 4}\n", "real.min_side"),
])
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert expected in str(info.value)


def test_a_url_is_refused_as_a_path_not_made_a_local_folder(tmp_path):
    """Workers read and write with local file I/O: `gs://b/a88` would become ./gs:/b/a88."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BASE.replace("output_dir: out", "output_dir: gs://bucket/a88")))
    assert str(info.value).startswith(f"{tmp_path / 'cfg.yaml'}: output_dir: gs://bucket/a88 is a URL;")
    with pytest.raises(ConfigError, match=r"^--out: s3://bucket/a88 is a URL; .* mount the bucket"):
        load_config(_write(tmp_path, BASE), output_dir="s3://bucket/a88")
    with pytest.raises(ConfigError, match=r"semantics.faces.path: gs://bucket/faces is a URL"):
        load_config(_write(tmp_path, BASE), ["semantics.faces.path=gs://bucket/faces"])
    assert not list(tmp_path.glob("gs:*")) and not list(Path.cwd().glob("s3:*"))


def test_every_architecture_is_a_valid_generator_and_ddpm_reads_folders(tmp_path):
    from benchmark.protocol import GENERATOR_ARCHS

    from benchmark.config import DIFFUSERS, FOLDER_ONLY_GENERATORS

    for arch in GENERATOR_ARCHS:
        if arch not in FOLDER_ONLY_GENERATORS:
            load_config(_write(tmp_path, BASE.replace("generator: sngan", f"generator: {arch}")))
    cfg = load_config(_write(tmp_path, BASE.replace(
        "generator: sngan, train: {steps: 2}}", "generator: ldm, folders: {faces: photos/a, rooms: photos/b}}")))
    assert cfg.sources["sngan"].kind("rooms") == DIFFUSERS and cfg.sources["sngan"].sample_steps is None
    cfg = load_config(_write(tmp_path, BASE.replace(
        "generator: sngan, train: {steps: 2}}", "generator: ddpm, folders: {faces: photos/a}, train: {steps: 2}}")))
    assert cfg.sources["sngan"].folders["faces"] == (tmp_path / "photos" / "a").resolve()


def test_set_overrides_values_and_checks_them(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path, ["sampling.chunk_size=4", "seed=7"])
    assert cfg.sampling.chunk_size == 4 and cfg.seed == 7
    with pytest.raises(ConfigError, match="sampling.chunk_size"):
        load_config(path, ["sampling.chunk_size=0"])
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        load_config(path, ["seed"])


def test_unreadable_and_non_mapping_configs(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_fingerprint_changes_with_any_setting(tmp_path):
    path = _write(tmp_path, BASE)
    assert load_config(path).fingerprint() == load_config(path).fingerprint()
    assert load_config(path).fingerprint() != load_config(path, ["seed=1"]).fingerprint()


def test_full_protocol_file_lists_every_path_to_fill():
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "pipeline.yaml")
    text = str(info.value)
    assert "semantics.celeba.path: folder not found" in text
    assert "features.inception.weights: file not found" in text
    assert "sources" not in text  # every architecture is built in: nothing to fill for sources


def test_full_protocol_settings(tmp_path):
    """pipeline.yaml carries the paper's numbers once its paths are filled in."""
    import yaml

    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    assert list(data["semantics"]) == ["celeba", "bedroom", "airplane", "classroom", "cow",
                                       "church_outdoor", "bridge", "bus", "sheep", "kitchen", "cat"]
    assert [s for s, v in data["semantics"].items() if v["seen"]] == list(data["semantics"])[:6]
    assert list(data["sources"]) == ["progan", "cramergan", "mmdgan", "sngan", "stylegan",
                                     "stylegan2", "stylegan3"]
    assert all(v["generator"] == k for k, v in data["sources"].items())
    assert data["selection"]["clusters"] * data["selection"]["per_cluster"] == 12000
    assert data["splits"] == {"train": 10000, "val": 1000, "test": 1000}
    assert data["sampling"]["per_model"] == 100000 and data["resolution"] == 128


# ----------------------------------------------------------------------------- protocol name


def _paper_config(tmp_path: Path, edit=None) -> Path:
    """pipeline.yaml with its FILL paths pointing at empty folders and random feature weights."""
    import yaml

    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    for semantic, spec in data["semantics"].items():
        (tmp_path / "photos" / semantic).mkdir(parents=True, exist_ok=True)
        spec["path"] = str(tmp_path / "photos" / semantic)
    data["features"]["inception"]["weights"] = "random"
    if edit is not None:
        edit(data)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_full_protocol_file_validates_as_attribution88(tmp_path):
    from benchmark.protocol import GAN_SOURCES

    cfg = load_config(_paper_config(tmp_path))
    assert cfg.protocol == "attribution88" and cfg.paper_scale
    assert cfg.classes == ("real", *GAN_SOURCES)


def test_attribution88_can_be_scaled_down_but_says_so(tmp_path):
    cfg = load_config(_paper_config(tmp_path), [
        "sampling.per_model=40", "selection.clusters=2", "selection.per_cluster=5",
        "splits={train: 6, val: 2, test: 2}", "real.gan_train_max=10",
        "selection.reference_count=12", "sources.progan.train.steps=2"])
    assert cfg.protocol == "attribution88" and not cfg.paper_scale


def _drop(section, name):
    return lambda d: d[section].pop(name)


def _set(section, name, key, value):
    return lambda d: d[section][name].__setitem__(key, value)


def _reorder(section, a, b):
    def edit(d):
        items = list(d[section].items())
        i, j = [k for k, _ in items].index(a), [k for k, _ in items].index(b)
        items[i], items[j] = items[j], items[i]
        d[section] = dict(items)
    return edit


def _with_folders(source):
    def edit(d):
        d["sources"][source] = {"generator": "folder",
                                "folders": {s: v["path"] for s, v in d["semantics"].items()}}
    return edit


@pytest.mark.parametrize("edit, expected", [
    (_drop("semantics", "cat"), "semantics of attribution88 missing here: cat"),
    (lambda d: d["semantics"].__setitem__("faces", dict(d["semantics"]["cat"])),
     "semantics not in attribution88: faces"),
    (_set("semantics", "bus", "seen", True),
     "semantics.bus.seen must be false: bus is unseen in training in attribution88"),
    (_set("semantics", "cow", "seen", False), "semantics.cow.seen must be true"),
    (_reorder("semantics", "celeba", "bedroom"),
     "attribution88 has its semantics in the order celeba, bedroom, airplane"),
    (_drop("sources", "stylegan3"), "sources of attribution88 missing here: stylegan3"),
    (lambda d: d["sources"].__setitem__("ddpm", {"generator": "ddpm", "train": {"steps": 2}}),
     "sources not in attribution88: ddpm"),
    (_reorder("sources", "sngan", "stylegan"),
     "attribution88 has its sources in the class order real, progan, cramergan, mmdgan, sngan"),
    (_set("sources", "progan", "generator", "sngan"),
     "sources.progan.generator is sngan: the progan class of attribution88 comes from progan"),
    (lambda d: d.__setitem__("resolution", 64), "attribution88 fixes resolution at 128 (here 64)"),
    (lambda d: (d["selection"].__setitem__("method", "yu_lpips"),
                d["features"]["lpips"].__setitem__("backbone_weights", "random")),
     "attribution88 fixes selection.method at repmix_kmeans"),
    (lambda d: d["corruptions"].__setitem__("unseen_set", "imagenet_c"),
     "attribution88 fixes corruptions.unseen_set at repmix"),
    (lambda d: d["corruptions"].__setitem__("test_probability", 0.5),
     "attribution88 fixes corruptions.test_probability at 1.0 (here 0.5)"),
])
def test_attribution88_refuses_a_config_that_differs(tmp_path, edit, expected):
    path = _paper_config(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any(m.startswith(f"{path}: protocol: {expected}") for m in info.value.messages)
    assert f"{path}: protocol: set `protocol: custom` to build a variant" in info.value.messages
    assert load_config(path, ["protocol=custom"]).protocol == "custom"  # fine as a variant


def test_a_source_may_be_a_folder_of_its_architectures_images(tmp_path):
    cfg = load_config(_paper_config(tmp_path, _with_folders("progan")))
    assert cfg.protocol == "attribution88" and cfg.sources["progan"].generator == "folder"


def test_configs_are_custom_unless_they_claim_the_protocol(tmp_path):
    path = _write(tmp_path, BASE)
    cfg = load_config(path)
    assert cfg.protocol == "custom" and not cfg.paper_scale
    with pytest.raises(ConfigError) as info:
        load_config(path, ["protocol=attribution88"])
    assert f"{path}: protocol: semantics not in attribution88: faces, rooms" in info.value.messages
    with pytest.raises(ConfigError, match="cfg.yaml: protocol: "):
        load_config(path, ["protocol=attribution89"])


def test_mini_preset_is_a_custom_variant(shared_real):
    mini = ROOT / "configs" / "mini.yaml"
    assert load_config(mini).protocol == "custom"
    with pytest.raises(ConfigError) as info:
        load_config(mini, ["protocol=attribution88"])
    assert f"{mini}: protocol: attribution88 fixes resolution at 128 (here 64)" in info.value.messages
