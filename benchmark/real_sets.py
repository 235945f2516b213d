"""Real photo sets: list a semantic's folder and split it into disjoint pools.

As in the paper, each semantic's photos serve two roles that must never overlap: a pool that
trains the generators (and gives the real reference images for quality selection), and the
pool from which the Real class is drawn.
"""

from __future__ import annotations

import math
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


def list_real_files(semantic: str, folder: Path, extensions: tuple[str, ...]) -> list[RealFile]:
    """Every photo under `folder` (recursively) with one of `extensions`, sorted by path."""
    exts = {e.lower().lstrip(".") for e in extensions}
    paths = sorted(p for p in Path(folder).rglob("*")
                   if p.is_file() and p.suffix.lower().lstrip(".") in exts)
    files, seen = [], {}
    for p in paths:
        rel = p.relative_to(folder).as_posix()
        key = real_key(semantic, rel)
        if key in seen:
            raise RealSetError(f"{folder}: {seen[key]} and {rel} both map to key {key}; "
                               "rename one of them")
        seen[key] = rel
        files.append(RealFile(key=key, path=str(p)))
    return files


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
