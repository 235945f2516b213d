"""The folder source: pre-generated images served by seed = index in file-name order."""

import cv2
import numpy as np
import pytest

import generators
from generators.base import GeneratorError
from generators.folder import FolderGenerator

# RGB colours of the images written below, in file-name order.
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (120, 120, 120), (250, 200, 10)]


def bgr(rgb):
    return rgb[::-1]


@pytest.fixture()
def folder(tmp_path):
    """Five solid-colour images of odd sizes and formats, plus files that must be ignored."""
    d = tmp_path / "imgs"
    d.mkdir()
    # a: RGB PNG, wide; the side bands are another colour and must be cropped away.
    img = np.full((37, 91, 3), bgr(COLOURS[0]), np.uint8)
    img[:, :20] = img[:, -20:] = (0, 0, 0)
    cv2.imwrite(str(d / "a.png"), img)
    # b: RGBA PNG (alpha dropped, not composited).
    rgba = np.zeros((50, 45, 4), np.uint8)
    rgba[..., :3] = bgr(COLOURS[1])
    rgba[..., 3] = 10
    cv2.imwrite(str(d / "b.png"), rgba)
    # c: JPEG, tall; upper-case suffix.
    cv2.imwrite(str(d / "c.JPG"), np.full((120, 64, 3), bgr(COLOURS[2]), np.uint8))
    # d: grayscale PNG, small (upsampled).
    cv2.imwrite(str(d / "d.png"), np.full((17, 19), COLOURS[3][0], np.uint8))
    # e: 16-bit RGB PNG, as WebP is lossy for colour checks.
    cv2.imwrite(str(d / "e.png"), (np.full((40, 40, 3), bgr(COLOURS[4]), np.uint16) * 257))
    (d / "notes.txt").write_text("not an image")
    (d / "sub").mkdir()
    cv2.imwrite(str(d / "sub" / "0.png"), np.zeros((32, 32, 3), np.uint8))
    return d


@pytest.mark.parametrize("resolution", [16, 64])
def test_images_come_out_at_resolution_in_name_order(folder, resolution):
    gen = FolderGenerator(folder, resolution)
    assert gen.count == 5 and gen.arch == "folder" and gen.resolution == resolution
    images = gen.sample(range(5))
    assert images.shape == (5, resolution, resolution, 3) and images.dtype == np.uint8
    for img, colour in zip(images, COLOURS):
        assert np.abs(img.astype(int) - colour).max() <= 6, (img.reshape(-1, 3)[:3], colour)


def test_seed_is_index_whatever_the_batch(folder):
    gen = FolderGenerator(folder, 32)
    assert np.array_equal(gen.sample([4, 1]), gen.sample(range(5))[[4, 1]])


def test_webp_is_read(folder):
    cv2.imwrite(str(folder / "f.webp"), np.full((30, 30, 3), (0, 0, 255), np.uint8))
    gen = FolderGenerator(folder, 16)
    assert gen.count == 6
    assert gen.sample([5])[0, 8, 8, 0] > 200  # red in RGB


def test_seed_out_of_range(folder):
    gen = FolderGenerator(folder, 32)
    with pytest.raises(GeneratorError, match="holds 5 images") as e:
        gen.sample([0, 5])
    assert str(folder) in str(e.value)
    with pytest.raises(GeneratorError):
        gen.sample([-1])


def test_listing_hash_tracks_contents(folder):
    before = FolderGenerator(folder, 32).checkpoint_sha256
    assert len(before) == 64 and before == FolderGenerator(folder, 64).checkpoint_sha256
    cv2.imwrite(str(folder / "z.png"), np.zeros((20, 20, 3), np.uint8))
    assert FolderGenerator(folder, 32).checkpoint_sha256 != before


def test_bad_inputs(tmp_path, folder):
    with pytest.raises(GeneratorError, match="does not exist"):
        FolderGenerator(tmp_path / "missing", 32)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GeneratorError, match="holds no"):
        FolderGenerator(empty, 32)
    (folder / "0_broken.png").write_bytes(b"\x89PNG not really")
    gen = FolderGenerator(folder, 32)
    with pytest.raises(GeneratorError, match="cannot be decoded") as e:
        gen.sample([0])
    assert "0_broken.png" in str(e.value)


def test_load_folder(folder):
    gen = generators.load("folder", folder=folder, resolution=24)
    assert isinstance(gen, generators.Generator)
    assert gen.sample([2]).shape == (1, 24, 24, 3)
    with pytest.raises(GeneratorError, match="needs folder"):
        generators.load("folder", resolution=24)
