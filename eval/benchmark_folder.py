"""The one reader of a built benchmark folder: classes, semantics, settings, manifest, shards.

Training, prediction and scoring all load a benchmark through `open_benchmark`, so a folder is
checked in one place and every consumer agrees on what it holds:

    folder = open_benchmark("out/mini")  # also `from eval import open_benchmark`
    folder.classes                       # ("real", "progan", ...): label order, real first
    folder.splits                        # ("train", "val", "test"): those with samples
    folder.manifest(["key", "label"], split="test")   # pyarrow Table (.to_pandas())
    folder.shards("train")               # [Path(".../train-000000.tar"), ...]
    folder.dataset("test", seen_only=True, corruptions=["none"])   # torch IterableDataset

A folder needs `manifest.parquet` and `classes.json` (that is all the scorer reads, so a
hand-made truth folder scores too); the settings a trainer needs (`resolution`,
`corruption_settings`) and the semantic list are read on first use, so a folder without them
fails then, naming the file, instead of at open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from benchmark.atomic import sha256_file
from benchmark.config import CorruptionSpec
from benchmark.protocol import REAL, SPLIT_NAMES

MANIFEST = "manifest.parquet"
CLASSES = "classes.json"
# Written last by the build (pipelines/build_attribution88.py): its settings are the build's.
DATASET_INFO = "dataset_info.json"
# The build's resolved config; consulted for a setting dataset_info.json lacks.
CONFIG = "config.json"


class BenchmarkError(Exception):
    """A benchmark folder, or a file in it, that is missing or not what the build writes."""


@dataclass(frozen=True)
class SemanticInfo:
    name: str
    label: int  # the manifest's `semantic_label` (seen semantics first)
    seen: bool  # in the training semantics


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BenchmarkError(f"{path} not found: is the folder a built benchmark?") from None
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read it ({exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BenchmarkError(f"{path}: not JSON ({exc})") from None


def _class_list(data: Any, path: Path) -> tuple[str, ...]:
    classes = data.get("classes") if isinstance(data, dict) else None
    if (not isinstance(classes, list) or not classes
            or not all(isinstance(c, str) and c for c in classes)):
        raise BenchmarkError(f"{path}: no class list (expected {{\"classes\": [\"real\", ...]}})")
    if len(set(classes)) != len(classes):
        raise BenchmarkError(f"{path}: a class appears twice in {classes}")
    if classes[0] != REAL:
        raise BenchmarkError(f"{path}: class 0 must be {REAL!r}, got {classes[0]!r}")
    return tuple(classes)


class BenchmarkFolder:
    """A built benchmark, opened by `open_benchmark`; files are read on first use and kept."""

    def __init__(self, path: Path, classes: tuple[str, ...]):
        self.path = path
        self.classes = classes

    def __repr__(self) -> str:
        return f"BenchmarkFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ classes.json

    @cached_property
    def semantics(self) -> tuple[SemanticInfo, ...]:
        """The semantics in label order (seen first), as classes.json lists them."""
        path = self.path / CLASSES
        entries = _read_json(path).get("semantics")
        if not isinstance(entries, list) or not entries:
            raise BenchmarkError(f"{path}: no 'semantics' list (name, label, seen per semantic)")
        out = []
        for i, entry in enumerate(entries):
            try:
                info = SemanticInfo(str(entry["name"]), int(entry["label"]), bool(entry["seen"]))
            except (TypeError, KeyError, ValueError) as exc:
                raise BenchmarkError(f"{path}: semantics[{i}] is not {{name, label, seen}} "
                                     f"({exc!r})") from None
            out.append(info)
        out.sort(key=lambda s: s.label)
        if [s.label for s in out] != list(range(len(out))):
            raise BenchmarkError(f"{path}: semantic labels must be 0..{len(out) - 1}, got "
                                 f"{[s.label for s in out]}")
        return tuple(out)

    # ------------------------------------------------------------------ build settings

    @cached_property
    def dataset_info(self) -> dict:
        """dataset_info.json, or {} for a folder without one (a hand-made truth folder)."""
        return self._optional_object(DATASET_INFO)

    @cached_property
    def _config(self) -> dict:
        return self._optional_object(CONFIG)

    def _optional_object(self, name: str) -> dict:
        """A JSON object file of the folder, or {} when the folder has none."""
        path = self.path / name
        if not path.is_file():
            return {}
        data = _read_json(path)
        if not isinstance(data, dict):
            raise BenchmarkError(f"{path}: expected a JSON object")
        return data

    def _setting(self, name: str) -> tuple[Any, Path]:
        """A build setting and the file it came from: dataset_info.json, else config.json."""
        for source, data in ((DATASET_INFO, self.dataset_info), (CONFIG, self._config)):
            if name in data:
                return data[name], self.path / source
        raise BenchmarkError(f"{self.path / DATASET_INFO}: no {name!r} (nor in {CONFIG}); the "
                             "build writes it last, so the build did not finish")

    @cached_property
    def resolution(self) -> int:
        """The stored images' side in pixels."""
        value, path = self._setting("resolution")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise BenchmarkError(f"{path}: 'resolution' must be a positive integer, got {value!r}")
        return value

    @cached_property
    def corruption_settings(self) -> dict:
        """The build's `corruptions` section (apply_at, unseen_set, backend, severities, ...),
        checked against the config schema, so online corruption honours the build's route."""
        value, path = self._setting("corruptions")
        try:
            return CorruptionSpec.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            raise BenchmarkError(f"{path}: 'corruptions' is not a corruption section:\n"
                                 f"{exc}") from None

    # ------------------------------------------------------------------ manifest

    @cached_property
    def manifest_sha256(self) -> str:
        """sha256 of manifest.parquet: the benchmark's identity (it changes with any sample,
        label or split, not with the software versions dataset_info.json records)."""
        return sha256_file(self.path / MANIFEST)

    def manifest(self, columns: Sequence[str] | None = None, split: str | None = None) -> pa.Table:
        """Manifest rows (of `split` if given; all otherwise), `columns` only if given."""
        path = self.path / MANIFEST
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowException) as exc:
            raise BenchmarkError(f"{path}: not a readable Parquet file ({exc})") from None
        wanted = list(columns) if columns is not None else list(schema.names)
        missing = [c for c in wanted + (["split"] if split is not None else [])
                   if c not in schema.names]
        if missing:
            raise BenchmarkError(f"{path}: no column(s) {missing}; it has {schema.names}")
        # The split column is read for the filter even when not asked for, then dropped.
        read = wanted if split is None or "split" in wanted else wanted + ["split"]
        try:
            table = pq.read_table(path, columns=read)
        except (OSError, pa.ArrowException) as exc:
            raise BenchmarkError(f"{path}: not a readable Parquet file ({exc})") from None
        if split is not None:
            table = table.filter(pc.equal(table.column("split"), split)).select(wanted)
        return table

    @cached_property
    def splits(self) -> tuple[str, ...]:
        """The splits that have samples, in protocol order (train, val, test)."""
        present = set(self.manifest(["split"]).column("split").to_pylist())
        return tuple(s for s in SPLIT_NAMES if s in present) + tuple(sorted(present - set(SPLIT_NAMES)))

    def dataset(self, split: str, *, seen_only: bool = False,
                corruptions: Iterable[str] | None = None):
        """The split's samples as a torch IterableDataset (eval.data.sample_dataset): dicts of
        key, image (uint8 (3, H, W) tensor, as stored), label, semantic_label, seen,
        corruption, severity. `seen_only` keeps the seen semantics, `corruptions` the samples
        stored with one of the named corruptions ("none" for clean)."""
        from eval.data import sample_dataset  # torch and webdataset, only when asked for

        return sample_dataset(self, split, seen_only=seen_only, corruptions=corruptions)

    def shards(self, split: str) -> list[Path]:
        """The split's tar shards, as the manifest lists them, sorted; each must exist."""
        names = sorted(set(self.manifest(["shard"], split=split).column("shard").to_pylist()))
        if not names:
            raise BenchmarkError(f"{self.path / MANIFEST}: no {split!r} samples, so no "
                                 f"{split} shards")
        paths = [self.path / n for n in names]
        absent = [p.name for p in paths if not p.is_file()]
        if absent:
            raise BenchmarkError(f"{self.path}: {split} shard(s) {absent[:5]} listed in {MANIFEST} "
                                 f"are missing ({len(absent)} of {len(paths)})")
        return paths


def open_benchmark(path: str | Path) -> BenchmarkFolder:
    """Open a built benchmark folder; raises BenchmarkError naming what is missing or broken."""
    path = Path(path)
    if not path.is_dir():
        raise BenchmarkError(f"{path}: no such benchmark folder")
    if not (path / MANIFEST).is_file():
        raise BenchmarkError(f"{path / MANIFEST} not found: is {path} a built benchmark?")
    classes = _class_list(_read_json(path / CLASSES), path / CLASSES)
    return BenchmarkFolder(path, classes)
