"""A Generator over pre-generated images in a folder: seed s is the s-th file in name order.

For architectures whose images were made elsewhere (or real photos), this gives the same
seed -> image interface as a network, so the rest of the pipeline treats both alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmark.images import ImageDecodeError, center_crop_resize, decode_photo
from generators.base import GeneratorError, check_seeds

NAME = "folder"
SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def list_images(path: Path) -> list[Path]:
    """Image files directly in `path`, sorted by file name (not recursive)."""
    if not path.is_dir():
        raise GeneratorError(f"image folder {path} does not exist or is not a directory")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()),
                   key=lambda p: p.name)
    if not files:
        raise GeneratorError(f"image folder {path} holds no {'/'.join(sorted(SUFFIXES))} files")
    return files


def listing_sha256(files: Sequence[Path]) -> str:
    """Identity of a folder's contents: sha256 of 'name<TAB>size' lines in order.

    Cheap to compute for 10^5 files, and it changes when a file is added, removed, renamed or
    rewritten to a different size; hashing every byte would cost a full read.
    """
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}\t{f.stat().st_size}\n".encode())
    return digest.hexdigest()


class FolderGenerator:
    """Images from a folder, centre-cropped to square and resized to `resolution`."""

    arch = NAME

    def __init__(self, path: Path | str, resolution: int):
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise GeneratorError(f"resolution must be a positive integer, not {resolution!r}")
        self.path = Path(path)  # folder holding the images (not searched recursively)
        self.resolution = resolution  # side of the square images sample() returns
        self.files = list_images(self.path)
        self.checkpoint_sha256 = listing_sha256(self.files)

    @property
    def count(self) -> int:
        return len(self.files)

    def read(self, index: int) -> np.ndarray:
        """Image number `index` in name order as uint8 (resolution, resolution, 3) RGB."""
        file = self.files[index]
        try:
            img = decode_photo(file.read_bytes())
        except ImageDecodeError as e:
            raise GeneratorError(f"image {file} cannot be decoded: {e.reason}") from e
        except OSError as e:
            raise GeneratorError(f"image {file} cannot be read: {e}") from e
        return center_crop_resize(img, self.resolution)

    def sample(self, seeds: Sequence[int]) -> np.ndarray:
        seeds = check_seeds(seeds)
        # Checked before any decoding so a bad request fails fast, not after a long read.
        too_large = [s for s in seeds if s >= self.count]
        if too_large:
            raise GeneratorError(f"seed {too_large[0]} is out of range: image folder {self.path} "
                                 f"holds {self.count} images")
        out = np.empty((len(seeds), self.resolution, self.resolution, 3), dtype=np.uint8)
        for i, seed in enumerate(seeds):
            out[i] = self.read(seed)
        return out
