"""Check a built benchmark folder against its own records, byte for byte.

What a download must satisfy (anyone can run it; it needs only the folder):
- every manifest row is stored exactly once, in the tar and at the position the row names, with
  the PNG bytes its sha256 and size record, and the sample's JSON equal to the row;
- no tar holds a member the manifest does not list, and no tar lies in the folder unlisted;
- every PNG decodes to an RGB image of the build's resolution;
- each (class, semantic, split) cell holds, stored, the count config.json asks for;
- dataset_info.json agrees with the files: sample and split counts, shard list, classes,
  resolution, and the config hash (sha256 of config.json less its final newline).

Tars are streamed (`tarfile` mode "r|"), one process per shard, so a million-image benchmark is
checked at the speed of reading and decoding its PNGs. Each problem names the sample key, or the
file and field, so a user can tell a truncated download from a changed sample.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from benchmark.manifest import MANIFEST_SCHEMA
from benchmark.protocol import REAL

MANIFEST = "manifest.parquet"
DATASET_INFO = "dataset_info.json"
CONFIG = "config.json"
CLASSES = "classes.json"
SPLITS = ("train", "val", "test")


class VerifyError(ValueError):
    """The folder is not a benchmark verify can read (no manifest, unreadable records)."""


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | extra | duplicate | misplaced | changed | bad_meta | bad_png | count | file | info
    where: str  # the sample key, or the file (and field) at fault
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.detail}"


@dataclass(frozen=True)
class StoredSample:
    """One key as a tar holds it: its position among the tar's keys and what was read."""
    key: str
    position: int
    members: tuple[str, ...]  # extensions, in tar order
    sha256: str | None  # of the .png bytes, None without a .png
    png_bytes: int
    meta: dict | None  # the parsed .json, None without one
    problem: str | None  # a PNG or JSON that cannot be read, or the wrong size


@dataclass
class ShardScan:
    name: str
    samples: list[StoredSample] = field(default_factory=list)
    error: str | None = None  # the tar itself cannot be read to its end


@dataclass
class VerifyReport:
    folder: Path
    problems: list[Problem]
    samples: int  # manifest rows
    images_read: int  # PNGs read from the tars
    shards: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def images_per_s(self) -> float:
        return self.images_read / self.seconds if self.seconds > 0 else 0.0

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p.kind for p in self.problems).items()))

    def to_json(self) -> dict:
        return {"folder": str(self.folder), "ok": self.ok, "samples": self.samples,
                "images_read": self.images_read, "shards": self.shards,
                "seconds": round(self.seconds, 3), "images_per_s": round(self.images_per_s, 1),
                "problem_counts": self.counts(),
                "problems": [{"kind": p.kind, "where": p.where, "detail": p.detail}
                             for p in self.problems]}


# ------------------------------------------------------------------ reading one tar (a worker)


def _check_png(data: bytes, resolution: int) -> str | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                return f"stored as {image.format}, not PNG"
            image.load()  # a full decode: a truncated or corrupt stream fails here
            if image.mode != "RGB":
                return f"mode {image.mode}, not RGB"
            if image.size != (resolution, resolution):
                return f"{image.size[0]}x{image.size[1]} px, not {resolution}x{resolution}"
    except Exception as exc:  # PIL raises many types for a bad stream
        return f"the PNG does not decode ({type(exc).__name__}: {exc})"
    return None


def _stored(key: str, position: int, parts: dict[str, bytes], order: list[str],
            resolution: int) -> StoredSample:
    png, raw = parts.get("png"), parts.get("json")
    problem, meta = None, None
    if raw is not None:
        try:
            meta = json.loads(raw)
        except ValueError as exc:
            problem = f"{key}.json is not JSON ({exc})"
    if png is not None and problem is None:
        problem = _check_png(png, resolution)
    return StoredSample(key, position, tuple(order),
                        hashlib.sha256(png).hexdigest() if png is not None else None,
                        len(png) if png is not None else 0, meta, problem)


def scan_shard(path: str | Path, resolution: int) -> ShardScan:
    """The samples of one tar, in order: members are grouped by key (the name up to its first
    dot, webdataset's convention) while the tar streams past."""
    path = Path(path)
    scan = ShardScan(path.name)
    current: str | None = None
    parts: dict[str, bytes] = {}
    order: list[str] = []

    def flush() -> None:
        if current is not None:
            scan.samples.append(_stored(current, len(scan.samples), parts, order, resolution))

    try:
        with tarfile.open(path, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    scan.samples.append(StoredSample(member.name, -1, (), None, 0, None,
                                                     f"tar member {member.name} is not a file"))
                    continue
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member).read()
                if key != current:
                    flush()
                    current, parts, order = key, {}, []
                if ext in parts:
                    ext = f"{ext} (again)"
                parts[ext] = data
                order.append(ext)
    except (tarfile.TarError, OSError, EOFError) as exc:
        scan.error = f"cannot be read to its end ({type(exc).__name__}: {exc})"
    flush()
    if scan.error is None and not _ends_as_a_tar(path):
        # cut at a member boundary, a tar streams without an error: its end marker tells
        scan.error = "truncated: no end-of-archive marker (two zero blocks)"
    return scan


def _ends_as_a_tar(path: Path) -> bool:
    """A whole tar's size is a multiple of 512 and it ends with at least two zero blocks."""
    size = path.stat().st_size
    if size < 1024 or size % 512:
        return False
    with open(path, "rb") as f:
        f.seek(size - 1024)
        return f.read(1024) == bytes(1024)


def _scan_job(job: tuple[str, int]) -> ShardScan:
    return scan_shard(*job)


# ------------------------------------------------------------------ comparing with the records


def _read_json(path: Path, problems: list[Problem]) -> Any:
    if not path.is_file():
        problems.append(Problem("file", path.name, "missing"))
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        problems.append(Problem("file", path.name, f"not readable JSON ({exc})"))
        return None


def _same(a: Any, b: Any) -> bool:
    """Equality of a JSON value and a Parquet value (floats compared exactly, as written)."""
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and float(a) == float(b)
    return a == b


def compare_sample(sample: StoredSample, shard: str, row: dict | None) -> list[Problem]:
    """What is wrong with one stored sample against its manifest row (None: not listed)."""
    key = sample.key
    if row is None:
        return [Problem("extra", key, f"in {shard} at position {sample.position}, not in the manifest")]
    out = []
    if sample.members != ("json", "png"):
        out.append(Problem("changed", key, f"{shard} holds members {list(sample.members)}, "
                                           f"expected ['json', 'png']"))
    if (row["shard"], row["position"]) != (shard, sample.position):
        out.append(Problem("misplaced", key, f"found in {shard} at position {sample.position}; "
                                             f"the manifest says {row['shard']} at {row['position']}"))
    if sample.sha256 is not None and (sample.sha256 != row["sha256"] or sample.png_bytes != row["png_bytes"]):
        out.append(Problem("changed", key, f"PNG sha256 {sample.sha256[:16]}... ({sample.png_bytes} bytes) "
                                           f"differs from the manifest's {row['sha256'][:16]}... "
                                           f"({row['png_bytes']} bytes)"))
    if sample.problem is not None:
        out.append(Problem("bad_png" if "PNG" in sample.problem or "px" in sample.problem
                           or "mode" in sample.problem else "bad_meta", key, sample.problem))
    elif sample.meta is not None:
        fields = sorted(f for f in set(row) | set(sample.meta)
                        if not _same(row.get(f), sample.meta.get(f)))
        if fields:
            shown = ", ".join(f"{f}: json {sample.meta.get(f)!r} vs manifest {row.get(f)!r}"
                              for f in fields[:3])
            out.append(Problem("bad_meta", key, f"{key}.json differs from the manifest row in "
                                                f"{fields} ({shown})"))
    return out


def check_counts(rows: list[dict], config: dict | None, classes: list[str] | None) -> list[Problem]:
    """Each (class, semantic, split) cell of `rows` (the samples found stored) against
    config.json's splits, and no other cell."""
    if not config:
        return []
    try:
        want = {s: int(config["splits"][s]) for s in SPLITS}
        semantics = list(config["semantics"])
        names = classes or [REAL, *config["sources"]]
    except (KeyError, TypeError, ValueError) as exc:
        return [Problem("file", CONFIG, f"no usable splits/semantics/sources ({exc})")]
    got = Counter((r["source"], r["semantic"], r["split"]) for r in rows)
    out = []
    for source in names:
        for semantic in semantics:
            for split, n in want.items():
                have = got.pop((source, semantic, split), 0)
                if have != n:
                    out.append(Problem("count", f"{source}/{semantic}/{split}",
                                       f"{have} samples, config.json asks for {n}"))
    for cell, n in sorted(got.items()):
        out.append(Problem("count", "/".join(cell), f"{n} samples in a cell config.json does not have"))
    return out


def check_info(info: dict | None, config_text: str | None, rows: list[dict], classes: list[str] | None,
               tars_on_disk: list[str]) -> list[Problem]:
    """dataset_info.json against the manifest, the tars present and config.json."""
    if info is None:
        return []
    out = []

    def differs(name: str, recorded: Any, actual: Any) -> None:
        if recorded != actual:
            out.append(Problem("info", f"{DATASET_INFO}:{name}", f"records {recorded!r}, the files give {actual!r}"))

    differs("samples", info.get("samples"), len(rows))
    split_counts = Counter(r["split"] for r in rows)
    differs("splits", info.get("splits"), {s: split_counts.get(s, 0) for s in SPLITS})
    differs("shards", info.get("shards"), tars_on_disk)
    if classes is not None:
        differs("classes", info.get("classes"), classes)
    if config_text is not None:
        differs("config_sha256", info.get("config_sha256"),
                hashlib.sha256(config_text.removesuffix("\n").encode()).hexdigest())
    return out


def verify(folder: str | Path, workers: int = 1,
           progress: Callable[[int, int, int], None] | None = None) -> VerifyReport:
    """Every check of the module docstring; `progress(shards_done, shards, images)` after each
    shard. Raises VerifyError only when the manifest itself cannot be read."""
    folder = Path(folder)
    start = time.perf_counter()
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise VerifyError(f"{manifest_path} not found: is {folder} a built benchmark?")
    try:
        rows = pq.read_table(manifest_path, schema=MANIFEST_SCHEMA).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise VerifyError(f"{manifest_path}: not a readable manifest ({exc})") from None

    problems: list[Problem] = []
    info = _read_json(folder / DATASET_INFO, problems)
    config = _read_json(folder / CONFIG, problems)
    class_file = _read_json(folder / CLASSES, problems)
    classes = class_file.get("classes") if isinstance(class_file, dict) else None
    if class_file is not None and not isinstance(classes, list):
        problems.append(Problem("file", CLASSES, 'no class list (expected {"classes": [...]})'))
        classes = None
    config_text = (folder / CONFIG).read_text() if config is not None else None
    resolution = (info or {}).get("resolution") or (config or {}).get("resolution")
    if not isinstance(resolution, int):
        raise VerifyError(f"{folder}: neither {DATASET_INFO} nor {CONFIG} gives the resolution")

    by_key: dict[str, dict] = {}
    for row in rows:
        if row["key"] in by_key:
            problems.append(Problem("duplicate", row["key"], "listed twice in the manifest"))
        by_key[row["key"]] = row
    listed = sorted({r["shard"] for r in rows})
    on_disk = sorted(p.name for p in folder.glob("*.tar"))
    for name in sorted(set(listed) - set(on_disk)):
        problems.append(Problem("file", name, "listed in the manifest, not in the folder"))
    for name in sorted(set(on_disk) - set(listed)):
        problems.append(Problem("file", name, "a tar in the folder that the manifest does not list"))

    found: dict[str, str] = {}  # key -> the shard it was first found in
    images = 0
    jobs = [(str(folder / name), resolution) for name in on_disk]
    scans: Iterable[ShardScan]
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
    try:
        # map keeps the shard order, so the report is the same for any worker count
        scans = pool.map(_scan_job, jobs, chunksize=1) if pool else map(_scan_job, jobs)
        for done, scan in enumerate(scans, start=1):
            if scan.error:
                problems.append(Problem("file", scan.name, scan.error))
            for sample in scan.samples:
                if sample.position < 0:
                    problems.append(Problem("extra", f"{scan.name}:{sample.key}", sample.problem or ""))
                    continue
                images += sample.sha256 is not None
                if sample.key in found:
                    problems.append(Problem("duplicate", sample.key,
                                            f"stored in {found[sample.key]} and again in {scan.name}"))
                    continue
                row = by_key.get(sample.key)
                if row is not None:
                    found[sample.key] = scan.name
                problems += compare_sample(sample, scan.name, row)
            if progress:
                progress(done, len(jobs), images)
    finally:
        if pool:
            pool.shutdown()
    for row in rows:
        if row["key"] not in found and row["shard"] in on_disk:
            problems.append(Problem("missing", row["key"], f"listed in {row['shard']} at position "
                                                           f"{row['position']}, not stored there"))
        elif row["key"] not in found:
            problems.append(Problem("missing", row["key"], f"its tar {row['shard']} is missing"))
    problems += check_counts([r for r in rows if r["key"] in found], config, classes)
    problems += check_info(info, config_text, rows, classes, on_disk)
    return VerifyReport(folder, problems, len(rows), images, len(on_disk), time.perf_counter() - start)


__all__ = ["Problem", "ShardScan", "StoredSample", "VerifyError", "VerifyReport", "check_counts",
           "check_info", "compare_sample", "scan_shard", "verify"]
