"""Photos from users' folders: every odd file is either decoded right or refused with a reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from benchmark.images import ImageDecodeError, apply_orientation, decode_photo


def _rgb(h=40, w=50, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes whose header claims width x height RGB pixels."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(orientation):
    arr = _rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(arr), "PNG", exif=exif.tobytes())  # lossless, so exact
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    out = decode_photo(data)
    assert out.shape == expected.shape and np.array_equal(out, expected)
    assert np.array_equal(apply_orientation(arr, orientation), expected)


@pytest.mark.parametrize("mode", ["CMYK", "P", "L", "LA", "RGBA", "I;16"])
def test_colour_modes_come_out_rgb_with_the_pixels_pil_sees(mode):
    arr = _rgb()
    if mode == "I;16":
        image = Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
        expected = np.repeat(arr[..., :1], 3, axis=2)
        data = _save(image, "PNG")
    else:
        image = Image.fromarray(arr).convert(mode)
        data = _save(image, "JPEG" if mode == "CMYK" else "PNG")
        expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = decode_photo(data)
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    # CMYK goes through two JPEG colour conversions: close, not exact
    tolerance = 3 if mode == "CMYK" else 0
    assert np.abs(out.astype(int) - expected.astype(int)).mean() <= tolerance


def test_decompression_bomb_is_refused_from_its_header():
    data = _png_header_claiming(60_000, 60_000)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode_photo(data)
    # a configurable limit, below PIL's own
    data = _save(Image.fromarray(_rgb(100, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="real.max_pixels = 9999"):
        decode_photo(data, max_pixels=9_999)
    assert decode_photo(data, max_pixels=10_000).shape == (100, 100, 3)


def test_a_decoder_exception_is_an_error_not_a_crash(monkeypatch):
    import cv2

    def explode(*args, **kwargs):
        raise cv2.error("OpenCV(5.1.0) loadsave.cpp:80: error: (-215:Assertion failed) pixels <= limit")

    monkeypatch.setattr(cv2, "imdecode", explode)
    with pytest.raises(ImageDecodeError, match="not a decodable image .OpenCV"):
        decode_photo(_save(Image.fromarray(_rgb()), "PNG"))


def test_bad_crc_truncated_empty_and_not_an_image():
    png = _save(Image.fromarray(_rgb()), "PNG")
    at = png.find(b"IDAT")
    length = struct.unpack(">I", png[at - 4:at])[0]
    crc = at + 4 + length
    bad_crc = png[:crc] + bytes([png[crc] ^ 0xFF]) + png[crc + 1:]
    for data, reason in ((bad_crc, "not a decodable image"), (png[: len(png) // 2], "not a decodable"),
                         (b"", "empty file"), (b"hello, not an image" * 10, "not a decodable image .its header")):
        with pytest.raises(ImageDecodeError, match=reason):
            decode_photo(data)


def test_min_side_refuses_tiny_photos_and_keeps_small_ones():
    small = _save(Image.fromarray(_rgb(20, 30)), "PNG")
    assert decode_photo(small).shape == (20, 30, 3)  # under a build's resolution: kept
    with pytest.raises(ImageDecodeError, match="real.min_side = 24"):
        decode_photo(small, min_side=24)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048), st.integers(0, 4000), st.integers(0, 255))
def test_fuzz_any_bytes_decode_or_raise_image_decode_error(noise, position, value):
    """Random bytes, and valid JPEG/PNG files with one byte changed or cut short: the reader
    returns RGB uint8 or raises ImageDecodeError, never anything else."""
    base = [_save(Image.fromarray(_rgb(24, 24)), "PNG"), _save(Image.fromarray(_rgb(24, 24)), "JPEG")]
    candidates = [noise]
    for data in base:
        i = position % len(data)
        candidates += [data[:i] + bytes([value]) + data[i + 1:], data[:i], data[:i] + noise]
    for data in candidates:
        try:
            out = decode_photo(data)
        except ImageDecodeError as exc:
            assert exc.reason
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
