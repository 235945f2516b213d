"""The build configuration: one typed, validated schema, loaded from YAML plus `--set` overrides.

Every section is a frozen pydantic model that forbids unknown keys, so a typo is an error
naming the file and the key instead of a silently ignored setting. Relative paths in a config
file resolve against that file's folder (a preset works from any working directory); paths
given with `--set` resolve against the working directory, as a shell user expects.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from benchmark import protocol as a88

NAME_PATTERN = r"^[a-z0-9_]+$"  # names go into sample keys: no '-' (separator), no '.' (webdataset)


class ConfigError(ValueError):
    """A config that cannot be used; each message names the file and the key."""

    def __init__(self, messages: list[str]):
        super().__init__("\n".join(messages))
        self.messages = messages


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f"file not found: {value}")
    return value


def _existing_dir(value: Path) -> Path:
    if not value.is_dir():
        raise ValueError(f"folder not found: {value}")
    return value


ExistingFile = Annotated[Path, AfterValidator(_existing_file)]
ExistingDir = Annotated[Path, AfterValidator(_existing_dir)]


class SemanticSpec(_Section):
    path: ExistingDir  # folder of real photos for this semantic (searched recursively)
    seen: bool  # seen in training (the paper's first 6) or held out for testing


class RealSpec(_Section):
    extensions: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
    # Cap on the photos of a semantic that train its generators (the paper uses 100k).
    gan_train_max: int = Field(100_000, ge=1)
    # Photos with a shorter side are refused (recorded in rejections.parquet); photos smaller
    # than `resolution` but at least this are kept and upsampled, as the paper's CelebA is.
    min_side: int = Field(8, ge=8)
    # Photos with more pixels are refused from their header, before decoding (at most PIL's own
    # hard limit, 2 x Image.MAX_IMAGE_PIXELS, above which it refuses a header itself).
    max_pixels: int = Field(100_000_000, ge=1, le=178_956_970)


class TrainSpec(_Section):
    """Training from scratch, used for every semantic a source has no checkpoint for."""
    steps: int = Field(ge=1)
    batch_size: int = Field(32, ge=1, le=4096)
    # Optimiser settings left out take the architecture's published ones (its TRAIN_DEFAULTS).
    lr_g: float | None = Field(None, gt=0, le=1)
    lr_d: float | None = Field(None, gt=0, le=1)
    n_dis: int | None = Field(None, ge=1, le=10)  # discriminator steps per generator step
    options: dict[str, Union[bool, int, float, str]] = {}  # architecture hyperparameters, e.g. ch
    # Snapshot the whole training state every N steps in the build's staging folder, so a
    # crashed build resumes training where it stopped (0: never). Does not change the result.
    checkpoint_every: int = Field(0, ge=0)


# Generators whose models can be a folder: images made elsewhere, or a diffusers model folder.
FOLDER_GENERATORS = ("folder", "ddpm", "ldm")
# Those that only read folders: no checkpoint, nothing to train.
FOLDER_ONLY_GENERATORS = a88.FOLDER_ONLY_ARCHS
# Those whose folders are diffusers models, sampled with DDIM over `sample_steps` steps.
DIFFUSION_GENERATORS = ("ddpm", "ldm")
# Their DDIM steps when a source gives no sample_steps: the DDPM and LDM pipelines' default.
DEFAULT_SAMPLE_STEPS = 50

# Where a (source, semantic) cell's images come from, settled once by SourceSpec.kind: the
# plan carries it, and the driver and the stages read it instead of re-deriving it.
FOLDER = "folder"  # pre-generated images
DIFFUSERS = "diffusers"  # a local diffusers model folder
CHECKPOINT = "checkpoint"  # a given weights file
TRAIN = "train"  # trained by the build


class SourceSpec(_Section):
    generator: Literal[a88.GENERATOR_ARCHS]  # type: ignore[valid-type]
    # semantic -> weights file: ours (.safetensors + .json), or another project's format the
    # architecture reads (generators.external: a rosinality .pt for stylegan2)
    checkpoints: dict[str, ExistingFile] = {}
    # semantic -> folder: pre-generated images (generator: folder), or a local diffusers model
    # folder (generators in DIFFUSION_GENERATORS)
    folders: dict[str, ExistingDir] = {}
    train: TrainSpec | None = None
    # DDIM steps when sampling a diffusers folder (DIFFUSION_GENERATORS only); unset:
    # DEFAULT_SAMPLE_STEPS. A trained ddpm takes train.options.sample_steps instead.
    sample_steps: int | None = Field(None, ge=1, le=1000)

    def kind(self, semantic: str) -> str | None:
        """FOLDER, DIFFUSERS, CHECKPOINT or TRAIN for `semantic`; None when the source gives
        no way to get its images (a config error that BuildConfig reports)."""
        if self.generator == "folder":
            return FOLDER if semantic in self.folders else None
        if self.generator in FOLDER_ONLY_GENERATORS:
            return DIFFUSERS if semantic in self.folders else None
        if semantic in self.folders:
            return DIFFUSERS
        if semantic in self.checkpoints:
            return CHECKPOINT
        return TRAIN if self.train is not None else None


def _folder_only_problems(name: str, src: SourceSpec) -> list[tuple[str, str]]:
    """Keys a source's generator cannot use: checkpoints or training for a folder-only one,
    sample_steps for one that samples no diffusers folder."""
    problems = []
    if src.generator in FOLDER_ONLY_GENERATORS:
        for key, given in (("checkpoints", src.checkpoints), ("train", src.train)):
            if given:
                problems.append((f"sources.{name}.{key}", f"generator {src.generator} reads folders only"))
    if src.sample_steps is not None and src.generator not in DIFFUSION_GENERATORS:
        problems.append((f"sources.{name}.sample_steps",
                         f"applies to diffusers folders ({', '.join(DIFFUSION_GENERATORS)}), "
                         f"not generator {src.generator}"))
    return problems


class SamplingSpec(_Section):
    per_model: int = Field(a88.SAMPLES_PER_MODEL, ge=1)
    # Images sampled per batch. Fixed by the config, never by the runner, so each image is
    # computed in the same batch (and so with the same float maths) on any runner.
    chunk_size: int = Field(256, ge=1, le=8192)


WeightsRef = Union[Literal["random"], Path]


def _check_weights_file(v: WeightsRef | None) -> WeightsRef | None:
    if v is None or v == "random":
        return v
    return _existing_file(Path(v))


class InceptionSpec(_Section):
    # A local InceptionV3 state dict (torchvision layout), or `random` for smoke tests only.
    weights: WeightsRef
    input_size: int = Field(299, ge=75, le=1024)  # 299 as trained; smaller trades fidelity for speed
    precision: Literal["fp32", "bf16"] = "bf16"
    batch_size: int = Field(64, ge=1, le=4096)

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, v: WeightsRef) -> WeightsRef:
        return _check_weights_file(v)


class LpipsSpec(_Section):
    # AlexNet backbone state dict for LPIPS (Yu et al. selection only), or `random`.
    backbone_weights: WeightsRef | None = None

    @field_validator("backbone_weights")
    @classmethod
    def _weights_file(cls, v: WeightsRef | None) -> WeightsRef | None:
        return _check_weights_file(v)


class FeaturesSpec(_Section):
    inception: InceptionSpec
    lpips: LpipsSpec = LpipsSpec()


class SelectionSpec(_Section):
    # repmix_kmeans: K-means over Inception features, top `per_cluster` nearest-real per cluster.
    # yu_lpips: Yu et al. 2019, LPIPS distance to the 1-nearest real image, keep the closest.
    method: Literal["repmix_kmeans", "yu_lpips"] = "repmix_kmeans"
    clusters: int = Field(a88.CLUSTERS, ge=1)
    per_cluster: int = Field(a88.PER_CLUSTER, ge=1)
    # k-means++ init costs ~60 s on 100k x 2048 here; random init ~7 s for the same selection role.
    kmeans_init: Literal["k-means++", "random"] = "random"
    # A cluster smaller than per_cluster is topped up from the rest by distance, so every
    # (source, semantic) cell keeps exactly clusters * per_cluster images.
    fill: bool = True
    # Real images the synthetic ones are compared with: drawn from the generators' training
    # pool, never from the Real class, so selection cannot leak the test photos.
    reference_count: int = Field(12_000, ge=1)

    @property
    def extractor(self) -> Literal["inception", "lpips"]:
        """The feature space the method compares images in."""
        return "inception" if self.method == "repmix_kmeans" else "lpips"


class SplitsSpec(_Section):
    train: int = Field(a88.SPLITS["train"], ge=0)
    val: int = Field(a88.SPLITS["val"], ge=0)
    test: int = Field(a88.SPLITS["test"], ge=0)

    @property
    def total(self) -> int:
        return self.train + self.val + self.test

    def counts(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test}


class CorruptionSpec(_Section):
    # Which 4 of the 19 ImageNet-C corruptions are held out of training (benchmark.protocol).
    unseen_set: Literal["repmix", "imagenet_c"] = "repmix"
    # Probability that a test (val) image carries a corruption; test draws from all 19 types,
    # val from the seen ones only. Train images are stored clean.
    test_probability: float = Field(1.0, ge=0, le=1)
    val_probability: float = Field(1.0, ge=0, le=1)
    severities: tuple[int, ...] = a88.SEVERITIES
    # `stored`: corrupt the stored image. `resized_224`: as the RepMix code, corrupt a 224 px
    # bilinear enlargement, then shrink back (area) to the stored size. Recorded in
    # dataset_info.json with the rest of this section.
    apply_at: Literal["stored", "resized_224"] = "stored"
    # `engine`: the fast implementation (benchmark/corruptions/engine.py), checked against the
    # reference by tests/benchmark/test_corruption_fidelity.py; `reference`: the
    # imagecorruptions package itself.
    backend: Literal["engine", "reference"] = "engine"

    @property
    def work_size(self) -> int | None:
        """The side at which corruptions are computed, None for the stored size."""
        return a88.APPLY_AT_WORK_SIZE[self.apply_at]

    @field_validator("severities")
    @classmethod
    def _severity_range(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(s not in a88.SEVERITIES for s in v) or len(set(v)) != len(v):
            raise ValueError("severities must be distinct values in 1..5")
        return tuple(sorted(v))


class ShardSpec(_Section):
    max_samples: int = Field(1000, ge=1)  # a new shard starts at this count


class RuntimeSpec(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch threads per worker. Part of the result: reductions split over another thread count
    # round differently, so keep it the same wherever a build must give the same bytes.
    torch_threads: int = Field(1, ge=1, le=256)
    # Beam `accelerator` resource hint put on the model stages when the device is cuda, for
    # runners that place work by hints; its format is the runner's, e.g. Dataflow's
    # "type:nvidia-l4;count:1;install-nvidia-driver". Direct and Dask runners ignore it.
    accelerator: str | None = Field(None, min_length=1)


class BuildConfig(_Section):
    # `attribution88` claims the paper's protocol and is checked against it (_protocol_problems);
    # `custom`, the default, is any variant.
    protocol: Literal[a88.PROTOCOLS] = a88.CUSTOM  # type: ignore[valid-type]
    seed: int = Field(0, ge=0, lt=2**63)
    output_dir: Path
    resolution: int = Field(a88.RESOLUTION, ge=32, le=1024)
    semantics: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SemanticSpec]
    sources: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SourceSpec]
    real: RealSpec = RealSpec()
    sampling: SamplingSpec = SamplingSpec()
    features: FeaturesSpec
    selection: SelectionSpec = SelectionSpec()
    splits: SplitsSpec = SplitsSpec()
    corruptions: CorruptionSpec = CorruptionSpec()
    shards: ShardSpec = ShardSpec()
    runtime: RuntimeSpec = RuntimeSpec()

    @model_validator(mode="after")
    def _consistent(self) -> "BuildConfig":
        problems: list[tuple[str, str]] = []
        if not self.semantics:
            problems.append(("semantics", "at least one semantic is required"))
        if not self.sources:
            problems.append(("sources", "at least one generator source is required"))
        if a88.REAL in self.sources:
            problems.append((f"sources.{a88.REAL}", "`real` is the implicit class 0"))
        for name, src in self.sources.items():
            for where, table in (("checkpoints", src.checkpoints), ("folders", src.folders)):
                for sem in table:
                    if sem not in self.semantics:
                        problems.append((f"sources.{name}.{where}.{sem}", "not a configured semantic"))
            problems += _folder_only_problems(name, src)
            for sem in self.semantics:
                if src.generator in FOLDER_ONLY_GENERATORS and sem not in src.folders:
                    problems.append((f"sources.{name}.folders.{sem}", "path required"))
                if sem in src.folders and src.generator not in FOLDER_GENERATORS:
                    problems.append((f"sources.{name}.folders.{sem}",
                                     f"generator {src.generator} reads checkpoints, not folders"))
                if sem in src.folders and sem in src.checkpoints:
                    problems.append((f"sources.{name}.checkpoints.{sem}", "give a checkpoint or a folder, not both"))
                if src.generator not in FOLDER_ONLY_GENERATORS and src.kind(sem) is None:
                    problems.append((f"sources.{name}.checkpoints.{sem}",
                                     "give a checkpoint, or a `train:` section to train one"))
        problems += self._output_problems()
        kept = self.kept_per_cell
        if self.splits.total != kept:
            problems.append(("splits", f"train+val+test = {self.splits.total} but selection "
                             f"keeps {kept} per (source, semantic)"))
        if self.sampling.per_model < kept:
            problems.append(("sampling.per_model",
                             f"{self.sampling.per_model} is fewer than the {kept} kept"))
        if self.selection.method == "yu_lpips" and self.features.lpips.backbone_weights is None:
            problems.append(("features.lpips.backbone_weights",
                             "required by selection.method yu_lpips (a file or `random`)"))
        problems += [("protocol", m) for m in self._protocol_problems()]
        if problems:
            raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
        return self

    def _output_problems(self) -> list[tuple[str, str]]:
        """An output folder that is, holds or lies inside an input folder: a rerun would read
        its own output as photos, and --overwrite would delete the inputs."""
        out = Path(self.output_dir).resolve()
        inputs = [(f"semantics.{name}.path", spec.path) for name, spec in self.semantics.items()]
        inputs += [(f"sources.{name}.folders.{sem}", folder) for name, src in self.sources.items()
                   for sem, folder in src.folders.items()]
        problems = []
        for key, folder in inputs:
            folder = Path(folder).resolve()
            if out == folder or folder in out.parents:
                problems.append(("output_dir", f"{out} is or lies inside the input folder {key} ({folder})"))
            elif out in folder.parents:
                problems.append(("output_dir", f"{out} holds the input folder {key} ({folder}); "
                                               f"--overwrite would delete it"))
        return problems

    def _protocol_problems(self) -> list[str]:
        """How this config differs from the protocol it names; nothing for `custom`."""
        name = a88.PROTOCOL_NAME
        if self.protocol != name:
            return []
        problems = []
        for what, wanted, got in (("semantics", a88.SEMANTICS, tuple(self.semantics)),
                                  ("sources", a88.GAN_SOURCES, tuple(self.sources))):
            missing = [x for x in wanted if x not in got]
            extra = [x for x in got if x not in wanted]
            if missing:
                problems.append(f"{what} of {name} missing here: {', '.join(missing)}")
            if extra:
                problems.append(f"{what} not in {name}: {', '.join(extra)}")
            if not missing and not extra and got != wanted:
                order = "class order real, " if what == "sources" else "order "
                problems.append(f"{name} has its {what} in the {order}{', '.join(wanted)} "
                                f"(here {', '.join(got)})")
        for sem, spec in self.semantics.items():
            if sem in a88.SEMANTICS and spec.seen != (sem in a88.SEEN_SEMANTICS):
                problems.append(f"semantics.{sem}.seen must be {str(not spec.seen).lower()}: {sem} is "
                                f"{'seen' if sem in a88.SEEN_SEMANTICS else 'unseen'} in training in {name}")
        for src_name, src in self.sources.items():
            if src_name in a88.GAN_SOURCES and src.generator not in (src_name, "folder"):
                problems.append(f"sources.{src_name}.generator is {src.generator}: the {src_name} class "
                                f"of {name} comes from {src_name} (or a folder of its images)")
        for key, value in a88.PINNED.items():
            if self.setting(key) != value:
                problems.append(f"{name} fixes {key} at {value} (here {self.setting(key)})")
        if problems:
            problems.append("set `protocol: custom` to build a variant")
        return problems

    def setting(self, dotted: str) -> Any:
        """The value of a dotted setting name, e.g. `selection.clusters`."""
        node: Any = self
        for part in dotted.split("."):
            node = getattr(node, part)
        return node

    @property
    def paper_scale(self) -> bool:
        """The protocol at the paper's counts, not a scaled-down run (recorded in dataset_info.json)."""
        return (self.protocol == a88.PROTOCOL_NAME
                and all(self.setting(k) == v for k, v in a88.PAPER_SCALE.items()))

    @property
    def kept_per_cell(self) -> int:
        """Images kept per (source, semantic) cell, real included."""
        return self.selection.clusters * self.selection.per_cluster

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names in label order: real first, then the sources as configured."""
        return (a88.REAL, *self.sources)

    def fingerprint(self) -> str:
        """sha256 of what decides the content (not where it is written): names a build."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        """The resolved settings, less output_dir: two copies of one build carry the same file."""
        return json.dumps(self.model_dump(mode="json", exclude={"output_dir"}), sort_keys=True, indent=2)


# ----------------------------------------------------------------------------- loading


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _local_path(value: str, base: Path, key: str) -> str:
    """`value` made absolute against `base`; a URL is refused, not turned into a local folder
    named `gs:` (workers read and write with local file I/O: pipelines/write_shards.py)."""
    if _URL.match(value):
        raise ConfigError([f"{key}: {value} is a URL; the build reads and writes local paths, the "
                           "same on the driver and every worker: mount the bucket or share (e.g. "
                           "gcsfuse, NFS) and give its path"])
    return str((base / Path(value).expanduser()).resolve())


def _resolve_paths(node: Any, base: Path, key: str = "") -> Any:
    """Make relative path-valued settings absolute against `base`."""
    path_keys = ("path", "output_dir", "weights", "backbone_weights")
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            sub = f"{key}.{k}" if key else str(k)
            if isinstance(v, str) and (k in path_keys or key.endswith(("checkpoints", "folders"))):
                out[k] = v if v == "random" else _local_path(v, base, sub)
            else:
                out[k] = _resolve_paths(v, base, sub)
        return out
    return node


def parse_override(assignment: str) -> tuple[list[str], Any]:
    """`--set key.path=value` as (key parts, value parsed as YAML); ConfigError when malformed."""
    if "=" not in assignment:
        raise ConfigError([f"--set {assignment}: expected KEY.PATH=VALUE"])
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError([f"--set {assignment}: empty key in {dotted!r}"])
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {dotted}: value is not valid YAML ({exc})"]) from None
    return parts, value


def _apply_override(data: dict, assignment: str) -> None:
    parts, value = parse_override(assignment)
    dotted = ".".join(parts)
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError([f"--set {dotted}: {part} is not a section"])
        node = nxt
    node[parts[-1]] = _resolve_paths({parts[-1]: value}, Path.cwd(), ".".join(parts[:-1]))[parts[-1]]


def _format_errors(source: str, exc: ValidationError) -> list[str]:
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        if err["type"] == "missing":
            msg = "required key is missing"
        if loc:
            messages.append(f"{source}: {loc}: {msg}")
        else:  # model-level checks carry their own key paths
            messages.extend(f"{source}: {m}" for m in msg.split("; "))
    return messages


def read_yaml_sections(path: Path) -> dict:
    """A config file's top-level mapping ({} for an empty file); ConfigError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read config ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections"])
    return data


def load_config(path: str | Path, overrides: list[str] = (), output_dir: str | Path | None = None) -> BuildConfig:
    """Read a YAML config, apply `--set` overrides, validate; ConfigError lists every problem."""
    path = Path(path)
    source = str(path)
    data = read_yaml_sections(path)
    try:
        data = _resolve_paths(data, path.parent.resolve())
    except ConfigError as exc:
        raise ConfigError([f"{source}: {m}" for m in exc.messages]) from None
    for assignment in overrides:
        _apply_override(data, assignment)
    if output_dir is not None:
        data["output_dir"] = _local_path(str(output_dir), Path.cwd(), "--out")
    _check_names(data, source)
    try:
        return BuildConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def _check_names(data: dict, source: str) -> None:
    for section in ("semantics", "sources"):
        table = data.get(section)
        if isinstance(table, dict):
            bad = [k for k in table if not isinstance(k, str) or not re.match(NAME_PATTERN, k)]
            if bad:
                raise ConfigError([f"{source}: {section}.{b}: names use a-z, 0-9 and _ only"
                                   for b in bad])
