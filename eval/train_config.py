"""The training configuration: one typed, validated schema, from YAML plus `--set` overrides.

Precedence, lowest first: the defaults below; the model's published settings (its module's
TRAIN_DEFAULTS, eval.models.train_defaults, mapped onto the sections by
sections_from_model_defaults); the config file's shared sections; the file's
`per_model.<model>` sections (one preset serves every model); `--set key.path=value`.

Every section is a frozen pydantic model that forbids unknown keys, so a typo is an error naming
the file and the key. Relative paths in a config file resolve against its folder; paths given
with `--set` against the working directory. The resolved config is saved in the run
(RUN/config.json) and a resumed run must resolve to the same one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmark.config import ConfigError, _format_errors, parse_override, read_yaml_sections

MODEL_NAMES = ("repmix", "yu", "dct", "khoo")
SCRATCH = "scratch"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    name: Literal[MODEL_NAMES]  # type: ignore[valid-type]
    # Constructor knobs of the model (eval.models.build_model's `options`), e.g. RepMix's backbone.
    options: dict[str, Union[bool, int, float, str, None]] = {}
    # A local backbone state dict (torchvision's ImageNet ResNet50 file for RepMix), or
    # `scratch`. Never a download; its sha256 is recorded in the run.
    backbone_weights: Union[Literal["scratch"], Path] = SCRATCH

    @field_validator("backbone_weights")
    @classmethod
    def _weights_file(cls, v: Union[str, Path]) -> Union[str, Path]:
        if v != SCRATCH and not Path(v).is_file():
            raise ValueError(f"file not found: {v} (a local state dict, or `scratch`)")
        return v


class DataSection(_Section):
    # Sizes for models that read resized images (RepMix: resize 256, random crop 224, eval 224);
    # models that read the stored size (Yu, DCT) ignore them.
    resize: int = Field(256, ge=8, le=4096)
    crop: int = Field(224, ge=8, le=4096)
    eval_size: int = Field(224, ge=8, le=4096)
    flip: bool = True
    online_corruption: bool = True  # one random seen ImageNet-C corruption per training image
    # Probability that a training image gets one random seen corruption online.
    corruption_probability: float = Field(0.95, ge=0, le=1)
    # Where the per-pixel and convolutional online corruptions run: in the loader's CPU workers,
    # or on the batch in the training step (eval.device_corruption).
    corruption_device: Literal["loader", "device"] = "loader"
    # Train and validate on the seen semantics only (the paper's protocol).
    seen_only: bool = True
    # examples (RepMix: pairs) per step of each process (torchrun: world_size x this); also eval
    batch_size: int = Field(32, ge=1, le=8192)
    workers: int = Field(2, ge=0, le=64)  # DataLoader worker processes (0: in the main one)
    shuffle_buffer: int = Field(1000, ge=1)
    mixes: int | None = Field(None, ge=1, le=8)  # images per example; None: the model's own
    mix_alpha: float = Field(0.4, gt=0)  # Beta / Dirichlet concentration of the mixing weights

    @model_validator(mode="after")
    def _crop_fits(self) -> "DataSection":
        if self.crop > self.resize:
            raise ValueError(f"data.crop ({self.crop}) is larger than data.resize ({self.resize})")
        return self


class OptimSection(_Section):
    optimizer: Literal["adam"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    # Coupled (L2 added to the gradient), as plain Adam in the released RepMix code.
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["step", "none"] = "none"
    step_size: int = Field(1, ge=1)  # epochs per StepLR step
    gamma: float = Field(1.0, gt=0, le=1)  # StepLR factor
    epochs: int = Field(30, ge=1, le=10_000)  # at most; early stopping may end sooner
    grad_clip: float | None = Field(None, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v


class EarlyStopSection(_Section):
    # The paper watches val accuracy; the released RepMix code watches val loss.
    metric: Literal["val_acc", "val_loss"] = "val_acc"
    patience: int = Field(3, ge=1)  # validations without improvement before stopping
    validate_every: int = Field(1, ge=1)  # epochs; the last epoch is always validated
    min_delta: float = Field(0.0, ge=0)


class RuntimeSection(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Mixed precision on CUDA (ignored on CPU): bf16 where the GPU supports it, else fp16.
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # on CUDA only

    @field_validator("amp", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML reads a bare `off` as false
    progress: bool = True  # tqdm bar (img/s, loss, ETA) on stderr


class TrainConfig(_Section):
    model: ModelSection
    data: DataSection = DataSection()
    optim: OptimSection = OptimSection()
    early_stop: EarlyStopSection = EarlyStopSection()
    runtime: RuntimeSection = RuntimeSection()
    seed: int = Field(0, ge=0, lt=2**63)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def comparable(self) -> dict:
        """The settings that change the result: all but the runtime section's device/progress."""
        data = self.model_dump(mode="json")
        data["runtime"] = {k: v for k, v in data["runtime"].items() if k not in ("device", "progress")}
        return data


def sections_from_model_defaults(defaults: Mapping[str, Any]) -> dict:
    """A model module's flat TRAIN_DEFAULTS (eval.models) as config sections."""
    mapping = {"optimizer": ("optim", "optimizer"), "lr": ("optim", "lr"), "betas": ("optim", "betas"),
               "eps": ("optim", "eps"), "weight_decay": ("optim", "weight_decay"),
               "max_epochs": ("optim", "epochs"), "batch_size": ("data", "batch_size"),
               "early_stop": ("early_stop", "metric"), "patience": ("early_stop", "patience"),
               "validate_every": ("early_stop", "validate_every")}
    out: dict = {}
    for key, value in defaults.items():
        if key in mapping:
            section, name = mapping[key]
            out.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
        elif key == "step_gamma":  # StepLR every epoch, or None for a constant rate
            out.setdefault("optim", {}).update(
                {"scheduler": "none"} if value is None else {"scheduler": "step", "step_size": 1, "gamma": value})
        # other keys (RepMix's early_stop_released) are documentation, not settings
    return out


def _merge(base: dict, top: Mapping) -> dict:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k != "options":
            out[k] = _merge(out[k], v)
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):  # model options merge too
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict:
    return _resolve_weights(read_yaml_sections(path), path.parent.resolve())


def _resolve_weights(data: dict, base: Path) -> dict:
    """Make a relative model.backbone_weights absolute against `base` (`scratch` stays)."""
    model = data.get("model")
    if isinstance(model, dict) and isinstance(model.get("backbone_weights"), str) \
            and model["backbone_weights"] != SCRATCH:
        model = {**model, "backbone_weights": str((base / Path(model["backbone_weights"]).expanduser()).resolve())}
        data = {**data, "model": model}
    return data


def _apply_override(data: dict, assignment: str) -> dict:
    """`key.path=value` (value parsed as YAML) set in a copy of `data`."""
    parts, value = parse_override(assignment)
    dotted = ".".join(parts)
    patch: Any = value
    for part in reversed(parts):
        patch = {part: patch}
    node = data
    for part in parts[:-1]:
        node = node.get(part, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ConfigError([f"--set {dotted}: {part} is not a section"])
    return _resolve_weights(_merge(data, patch), Path.cwd())


def load_train_config(model: str, path: str | Path | None = None, overrides: Sequence[str] = (),
                      model_defaults: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve the config for `model`; ConfigError lists every problem, naming file and key."""
    source = str(path) if path is not None else "--set"
    if model not in MODEL_NAMES:
        raise ConfigError([f"--model {model}: choose one of {', '.join(MODEL_NAMES)}"])
    data: dict = {"model": {"name": model}}
    data = _merge(data, sections_from_model_defaults(model_defaults or {}))
    if path is not None:
        file_data = _read_yaml(Path(path))
        per_model = file_data.pop("per_model", {}) or {}
        if not isinstance(per_model, dict) or any(k not in MODEL_NAMES for k in per_model):
            raise ConfigError([f"{source}: per_model: a mapping with keys among "
                               f"{', '.join(MODEL_NAMES)}"])
        data = _merge(data, file_data)
        data = _merge(data, per_model.get(model) or {})
    for assignment in overrides:
        data = _apply_override(data, assignment)
    if data.get("model", {}).get("name") != model:
        raise ConfigError([f"{source}: model.name is {data.get('model', {}).get('name')!r} but "
                           f"--model is {model}; leave model.name out of the file"])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def config_from_json(text: str) -> TrainConfig:
    """The resolved config saved in a run (RUN/config.json)."""
    return TrainConfig.model_validate(json.loads(text))
