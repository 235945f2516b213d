"""Sample keys and the seeds derived from them.

A key says where a sample came from (`sngan-celeba-s00004213`: the 4213th sample of that cell,
`real-bedroom-0a1b2c`) and is unique in a build. Every random choice about a sample (latent,
split, shard order, corruption) is a hash of the build seed, a purpose and the key or cell:
never arrival order, worker or wall time, so any runner with any number of workers makes the
same choices.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


class DuplicateKeyError(ValueError):
    """The one policy for a sample key seen twice: an error, never a silent de-duplication."""


def check_unique(keys: Iterable[str], where: str) -> None:
    """Raise DuplicateKeyError naming `where` and the first repeated keys."""
    seen: set[str] = set()
    repeated = sorted({k for k in keys if k in seen or seen.add(k)})
    if repeated:
        raise DuplicateKeyError(f"{where}: duplicate keys {repeated[:5]}"
                                f"{' ...' if len(repeated) > 5 else ''}")


def derive_seed(seed: int, purpose: str, key: str = "") -> int:
    """A 63-bit seed for `purpose` (e.g. 'split') and `key`, stable across machines and Pythons."""
    digest = hashlib.sha256(f"{seed}\x1f{purpose}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def order_key(seed: int, purpose: str, key: str) -> str:
    """A sort key that shuffles keys deterministically (hex sha256; ties impossible in practice)."""
    return hashlib.sha256(f"{seed}\x1f{purpose}\x1f{key}".encode()).hexdigest()


def latent_seed(build_seed: int, source: str, semantic: str, arch: str, index: int) -> int:
    """The seed a generator is asked for to draw the `index`-th sample of a (source, semantic) cell.

    The one place that maps a sample index to a seed. Derived from the build seed and the cell:
    the plain index would give sample s the same latent (and per-image noise) in every cell, and
    the same latents whatever the config `seed`. A folder source's seed is the index of a file
    in name order, so there it stays the index. Always in [0, 2**63), as generators require.
    """
    if arch == "folder":
        return index
    return derive_seed(build_seed, "latent", f"{source}-{semantic}-{index}")


def synthetic_key(source: str, semantic: str, index: int) -> str:
    """Key of the `index`-th sample of a cell; its latent seed is in the manifest."""
    return f"{source}-{semantic}-s{index:08d}"


def real_key(semantic: str, relative_path: str) -> str:
    """Key of a real photo from its path inside the semantic's folder, minus the extension.

    Characters that are not letters, digits or `_` become `_`: a dot would make webdataset
    split the key, and `-` separates the key's fields.
    """
    stem = relative_path.rsplit(".", 1)[0] if "." in relative_path.rsplit("/", 1)[-1] else relative_path
    return f"real-{semantic}-{_UNSAFE.sub('_', stem)}"
