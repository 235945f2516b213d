import cv2
import numpy as np
import pytest

from benchmark.images import (ImageDecodeError, center_crop_resize, decode_image, encode_png, image_grid,
                              label_rows)


def _encode(img: np.ndarray, ext: str) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("shape, ext", [((89, 109, 3), ".jpg"), ((300, 500, 3), ".png"),
                                        ((64, 40), ".png"), ((70, 90, 4), ".png"), ((50, 50, 3), ".webp")])
def test_odd_sizes_grayscale_and_alpha_come_out_rgb_at_size(shape, ext):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, shape, dtype=np.uint8)
    out = center_crop_resize(decode_image(_encode(img, ext)), 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8


def test_channel_order_is_rgb_and_alpha_dropped():
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 2] = 200  # red in OpenCV's BGR order
    bgra[..., 3] = 0  # fully transparent: colour kept anyway
    rgb = decode_image(_encode(bgra, ".png"))
    assert (rgb[..., 0] == 200).all() and (rgb[..., 1:] == 0).all()


def test_sixteen_bit_png_is_scaled_to_eight_bit():
    img = np.full((20, 20, 3), 65535, np.uint16)
    assert (decode_image(_encode(img, ".png")) == 255).all()


def test_centre_crop_keeps_the_middle_of_a_wide_image():
    img = np.zeros((100, 300, 3), np.uint8)
    img[:, 100:200] = 255  # the centre square is white, the sides black
    out = center_crop_resize(img, 50)
    assert (out == 255).all()


@pytest.mark.parametrize("data, reason", [(b"", "empty file"), (b"not an image", "not a decodable image")])
def test_undecodable_bytes_raise_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_truncated_jpeg_is_refused_or_decodes_at_full_size():
    img = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _encode(img, ".jpg")[:200]
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_png_round_trip_is_lossless_and_deterministic():
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    png = encode_png(img)
    assert png == encode_png(img)
    assert (decode_image(png) == img).all()


def test_grid_tiles_row_major():
    tiles = np.stack([np.full((2, 2, 3), i, np.uint8) for i in range(5)])
    grid = image_grid(tiles, 3)
    assert grid.shape == (4, 6, 3)
    assert grid[0, 4, 0] == 2 and grid[2, 2, 0] == 4 and grid[2, 4, 0] == 0


def test_label_rows_names_each_row_in_a_margin_and_keeps_the_tiles():
    grid = np.full((2 * 64, 3 * 64, 3), 128, np.uint8)
    out = label_rows(grid, ["real", "stylegan2"], 64)
    margin = out.shape[1] - grid.shape[1]
    assert out.shape[0] == grid.shape[0] and margin > 0
    assert (out[:, margin:] == grid).all()
    for row in range(2):  # each row's own band of the margin carries ink
        band = out[row * 64:(row + 1) * 64, :margin]
        assert (band < 128).any()
    # a longer label widens the margin
    assert label_rows(grid, ["a", "b"], 64).shape[1] < out.shape[1]
