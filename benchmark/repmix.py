"""The benchmark as the released RepMix code reads it (TuBui/image_attribution).

Its loader (`utils/folder.py`, `ImageFolder`) reads a CSV with `path,label,dlabel`, opens
`os.path.join(data_dir, path)`, and takes `label` as the class (`y_gan`, 0 = real) and `dlabel`
as the semantic (`y_sem`); `utils/analysis.py` counts dlabel 0..nseen-1 as the seen semantics.
`train.py` trains on every row of train.csv and validates on every row of val.csv, so those two
list the seen semantics only, or the released training would see the held-out ones.

`repmix/{split}.csv` name their images `SPLIT/KEY.png`; `export_split` writes exactly those
files from the shards, so `test.py -d DEST -l OUT/repmix/test.csv` runs unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import pyarrow as pa

from benchmark import protocol
from benchmark.atomic import write_text
from benchmark.manifest import read_manifest

CSV_HEADER = ("path", "label", "dlabel")
CSV_FOLDER = "repmix"


def semantic_labels(semantics: Mapping[str, bool]) -> dict[str, int]:
    """Semantic name -> index, seen semantics first, each group in the given (config) order.

    The released analysis takes indices below the number of seen semantics as seen, so the
    order is part of the interface, not a cosmetic choice.
    """
    seen = [s for s, is_seen in semantics.items() if is_seen]
    unseen = [s for s, is_seen in semantics.items() if not is_seen]
    return {s: i for i, s in enumerate(seen + unseen)}


def keeps_unseen(split: str) -> bool:
    """Whether a split's CSV lists unseen semantics: only test does (the paper trains on 6)."""
    return split == "test"


def csv_text(manifest: pa.Table, split: str, semantics: Mapping[str, bool]) -> str:
    labels = semantic_labels(semantics)
    keep_unseen = keeps_unseen(split)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in manifest.select(["key", "split", "label", "semantic"]).to_pylist():
        if r["split"] != split:
            continue
        if r["semantic"] not in labels:
            raise ValueError(f"manifest row {r['key']}: semantic {r['semantic']!r} is not in the "
                             f"config's semantics {sorted(labels)}")
        if keep_unseen or semantics[r["semantic"]]:
            writer.writerow([f"{split}/{r['key']}.png", r["label"], labels[r["semantic"]]])
    return buf.getvalue()


def write_repmix_csvs(folder: Path, manifest: pa.Table, semantics: Mapping[str, bool]) -> None:
    """`FOLDER/{train,val,test}.csv` for the released RepMix loader (see the module doc)."""
    for split in protocol.SPLIT_NAMES:
        write_text(folder / f"{split}.csv", csv_text(manifest, split, semantics))


# ----------------------------------------------------------------------------- export


class ExportError(ValueError):
    """The benchmark folder cannot be exported as asked; the message names the file and row."""


@dataclass(frozen=True)
class ExportStats:
    split: str
    folder: Path  # DEST/SPLIT
    written: int  # files this run wrote
    present: int  # files already there with the right bytes (a rerun writes none)


@dataclass(frozen=True)
class _Wanted:
    key: str
    shard: str
    sha256: str


def _csv_keys(csv_path: Path, split: str) -> list[str]:
    """The keys a split's CSV names, checked to be `SPLIT/KEY.png` and listed once."""
    if not csv_path.is_file():
        raise ExportError(f"{csv_path} not found: is it a built benchmark folder?")
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header[:1]) != CSV_HEADER[:1]:
            raise ExportError(f"{csv_path}: header must start with `path`, found {header}")
        keys, seen = [], set()
        for line, row in enumerate(reader, start=2):
            path = row[0] if row else ""
            folder, _, name = path.partition("/")
            key = name[:-len(".png")] if name.endswith(".png") else ""
            if folder != split or not key or "/" in key or "." in key:
                raise ExportError(f"{csv_path}:{line}: path {path!r} is not {split}/KEY.png")
            if key in seen:
                raise ExportError(f"{csv_path}:{line}: {path} is listed twice")
            seen.add(key)
            keys.append(key)
    return keys


def _wanted(out_dir: Path, split: str, manifest: pa.Table) -> list[_Wanted]:
    csv_path = out_dir / CSV_FOLDER / f"{split}.csv"
    keys = _csv_keys(csv_path, split)
    rows = {r["key"]: r for r in manifest.select(["key", "split", "shard", "sha256"]).to_pylist()}
    wanted = []
    for key in keys:
        r = rows.get(key)
        if r is None or r["split"] != split:
            raise ExportError(f"{csv_path}: {split}/{key}.png is not a {split} sample of "
                              f"{out_dir / 'manifest.parquet'}")
        wanted.append(_Wanted(key, r["shard"], r["sha256"]))
    return wanted


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png_members(path: Path, keys: Mapping[str, _Wanted]) -> Iterator[tuple[str, bytes]]:
    """(key, bytes) of the wanted PNG members, streamed; a damaged tar is an ExportError."""
    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext == "png" and key in keys:
                    yield key, tar.extractfile(member).read()
    except (tarfile.TarError, OSError) as exc:
        raise ExportError(f"{path}: not a readable tar ({exc})") from None


def _extract(out_dir: Path, wanted: list[_Wanted], staging: Path) -> None:
    """Stream each shard once, writing the wanted PNGs into `staging` after checking their sha256."""
    by_shard: dict[str, dict[str, _Wanted]] = {}
    for w in wanted:
        by_shard.setdefault(w.shard, {})[w.key] = w
    for shard, keys in sorted(by_shard.items()):
        path = out_dir / shard
        if not path.is_file():
            raise ExportError(f"{path} not found (named by the manifest for {len(keys)} samples)")
        found = set()
        for key, data in _png_members(path, keys):
            got = _sha256(data)
            if got != keys[key].sha256:
                raise ExportError(f"{path}: member {key}.png has sha256 {got}, the manifest says "
                                  f"{keys[key].sha256}; the shard is damaged, rebuild or re-copy it")
            (staging / f"{key}.png").write_bytes(data)
            found.add(key)
        missing = sorted(set(keys) - found)
        if missing:
            raise ExportError(f"{path}: {len(missing)} samples the manifest places there are "
                              f"missing, e.g. {missing[0]}.png")


def export_split(out_dir: str | Path, split: str, dest: str | Path | None = None) -> ExportStats:
    """Write `DEST/SPLIT/KEY.png` for every row of `OUT/repmix/SPLIT.csv` (DEST: OUT/repmix).

    Every PNG is checked against the manifest's sha256. A file already at its place with the
    right bytes is kept (a rerun writes nothing); one with other bytes is refused before any
    work. New files are gathered in a hidden folder beside the split's and moved in only when
    all of them are extracted and checked, so an error leaves the split folder as it was.
    """
    out_dir = Path(out_dir)
    if split not in protocol.SPLIT_NAMES:
        raise ExportError(f"unknown split {split!r}; one of {', '.join(protocol.SPLIT_NAMES)}")
    manifest_path = out_dir / "manifest.parquet"
    if not manifest_path.is_file():
        raise ExportError(f"{manifest_path} not found: is {out_dir} a built benchmark folder?")
    dest = Path(dest) if dest is not None else out_dir / CSV_FOLDER
    target = dest / split
    wanted = _wanted(out_dir, split, read_manifest(manifest_path))
    todo = []
    for w in wanted:
        path = target / f"{w.key}.png"
        if not path.exists():
            todo.append(w)
        elif not path.is_file() or _sha256(path.read_bytes()) != w.sha256:
            raise ExportError(f"{path} exists with other content than the benchmark's; "
                              "remove it or export to another --dest")
    if todo:
        staging = dest / f".{split}.partial-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            _extract(out_dir, todo, staging)
            target.mkdir(parents=True, exist_ok=True)
            for w in todo:
                os.replace(staging / f"{w.key}.png", target / f"{w.key}.png")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportStats(split, target, written=len(todo), present=len(wanted) - len(todo))
