"""Real photo sets: list a semantic's folder and split it into disjoint pools.

As in the paper, each semantic's photos serve two roles that must never overlap: a pool that
trains the generators (and gives the real reference images for quality selection), and the
pool from which the Real class is drawn.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from benchmark.keys import order_key, real_key


class RealSetError(ValueError):
    """A real folder that cannot provide what the config asks of it."""


@dataclass(frozen=True)
class RealFile:
    key: str
    path: str  # absolute path of the photo


@dataclass(frozen=True)
class RealPools:
    semantic: str
    real_class: tuple[RealFile, ...]  # candidates for the Real class, in priority order
    real_class_count: int  # how many of the candidates the Real class keeps
    gan_train: tuple[RealFile, ...]  # photos that train generators, in priority order


@dataclass(frozen=True)
class RealListing:
    """A semantic folder's usable photos, and the files it refused with the reason."""
    files: tuple[RealFile, ...]  # sorted by path, one per distinct content
    rejections: tuple[dict, ...]  # rejection rows (benchmark.manifest.REJECTION_SCHEMA)


def _rejection(semantic: str, folder: Path, path: Path, reason: str) -> dict:
    rel = path.relative_to(folder).as_posix()
    return {"key": real_key(semantic, rel), "source": "real", "semantic": semantic,
            "path": str(path), "stage": "list_real", "reason": reason}


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None  # reported when the photo is read (stage read_real)
    return digest.hexdigest()


def list_real_files(semantic: str, folder: Path, extensions: tuple[str, ...]) -> RealListing:
    """Every photo under `folder` (recursively) with one of `extensions`, sorted by path.

    Refused here, each with a rejection row: a symlink that loops or points nowhere, and a
    second copy of the same bytes (the first path in sort order is kept; a duplicate could
    otherwise land in the Real class and in the generators' training pool at once). Only files
    whose sizes collide are hashed, so a folder of distinct photos is listed from stat calls.
    Symlinked folders are not descended (pathlib's rglob), so a folder link cannot loop.
    """
    folder = Path(folder)
    exts = {e.lower().lstrip(".") for e in extensions}
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in exts)
    rejections: list[dict] = []
    sizes: dict[Path, int] = {}
    for p in paths:
        try:
            st = p.stat()
        except OSError as exc:  # a loop (ELOOP) or a link to nothing (ENOENT)
            reason = ("symlink loop" if exc.errno == errno.ELOOP else
                      f"broken symlink to {os.readlink(p)}" if p.is_symlink() else
                      f"cannot stat: {exc.strerror}")
            rejections.append(_rejection(semantic, folder, p, reason))
            continue
        if stat.S_ISREG(st.st_mode):
            sizes[p] = st.st_size
    by_size: dict[int, list[Path]] = {}
    for p, size in sizes.items():
        by_size.setdefault(size, []).append(p)
    duplicate_of: dict[Path, Path] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        first: dict[str, Path] = {}
        for p in group:  # sorted, so the kept copy is the first path
            digest = _sha256(p)
            if digest is None:
                continue
            if digest in first:
                duplicate_of[p] = first[digest]
            else:
                first[digest] = p
    files, seen = [], {}
    for p in sizes:
        rel = p.relative_to(folder).as_posix()
        if p in duplicate_of:
            rejections.append(_rejection(semantic, folder, p, "duplicate: the same bytes as "
                                         + duplicate_of[p].relative_to(folder).as_posix()))
            continue
        key = real_key(semantic, rel)
        if key in seen:
            raise RealSetError(f"{folder}: {seen[key]} and {rel} both map to key {key}; "
                               "rename one of them")
        seen[key] = rel
        files.append(RealFile(key=key, path=str(p)))
    if not files:
        raise RealSetError(f"semantics.{semantic}.path ({folder}): no photos with an extension in "
                           f"real.extensions {sorted(exts)}"
                           + (f" ({len(rejections)} file(s) refused)" if rejections else ""))
    return RealListing(tuple(files), tuple(sorted(rejections, key=lambda r: r["path"])))


def spare_count(needed: int) -> int:
    """Extra Real-class candidates, so a few undecodable photos do not leave the class short."""
    return math.ceil(needed * 0.02) + 8


def partition_pools(semantic: str, files: list[RealFile], *, seed: int, real_class: int,
                    gan_train_max: int, folder: Path | str = "") -> RealPools:
    """Shuffle by a hash of (seed, key); the first candidates go to the Real class, the rest train.

    Hash order, not file order, so that adding a photo to a folder moves no other photo
    between pools, and the split is the same on every machine.
    """
    ordered = sorted(files, key=lambda f: order_key(seed, f"pool/{semantic}", f.key))
    candidates = min(len(ordered) - 1, real_class + spare_count(real_class))
    if candidates < real_class or len(ordered) - candidates < 1:
        raise RealSetError(f"semantics.{semantic}.path ({folder}): {len(ordered)} photos, but the "
                           f"Real class needs {real_class} and the generators need at least one more")
    return RealPools(semantic=semantic,
                     real_class=tuple(ordered[:candidates]),
                     real_class_count=real_class,
                     gan_train=tuple(ordered[candidates:candidates + gan_train_max]))
