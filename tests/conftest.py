"""Shared fixtures: photos the tests make themselves, and the optional shared sample data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SHARED_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"


def write_photos(folder: Path, count: int, seed: int, size=(96, 80)) -> list[Path]:
    """Smooth random colour fields (JPEG), so a tiny GAN has something learnable."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        img = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


@pytest.fixture
def shared_real() -> Path:
    if not (SHARED_REAL / "celeba").is_dir() or not (SHARED_REAL / "lsun_bedroom").is_dir():
        pytest.skip(f"shared sample photos not found at {SHARED_REAL} (a user's clone has none)")
    return SHARED_REAL
