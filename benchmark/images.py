"""Decode, crop, resize and encode images: the pixel-level steps every source shares.

OpenCV does the work: it decodes JPEG/PNG/WebP without a Python loop, its resize kernels are
deterministic for a pinned version, and its PNG encoder at level 1 is ~5x faster than PIL's
default for ~15% more bytes (measured here). PNG is lossless, so the fingerprints a generator
leaves survive storage; a lossy re-encode only happens as a corruption.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

# Level 1: fastest lossless setting; the bytes stay deterministic for a pinned OpenCV/zlib.
PNG_COMPRESSION = 1
# Photos read from users' folders: a larger image is refused from its header, before any
# pixel is allocated (a 100-megapixel photo decodes to 300 MB; a crafted PNG header can claim
# gigapixels in a few hundred bytes). `real.max_pixels` in the config.
MAX_PIXELS = 100_000_000
MIN_SIDE = 8  # the smallest short side decode_image takes (`real.min_side` may ask for more)
EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """An image file or payload that cannot be turned into RGB pixels; `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes to uint8 RGB (H, W, 3); grayscale, alpha and 16-bit are folded in."""
    if not data:
        raise ImageDecodeError("empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ImageDecodeError("not a decodable image (truncated or unknown format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        # Alpha is dropped rather than composited: the photos' colour values are what a
        # generator was trained on, whatever the background they would be shown on.
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ImageDecodeError(f"unsupported channel count {img.shape[2]}")
    if min(img.shape[:2]) < MIN_SIDE:
        raise ImageDecodeError(f"image too small ({img.shape[1]}x{img.shape[0]})")
    return np.ascontiguousarray(img)


def _header(data: bytes) -> tuple[int, int, int]:
    """(width, height, EXIF orientation) from the file's header alone: PIL's open parses
    headers and defers decoding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's own bomb warning: our limit decides
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                try:
                    orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
                except Exception:  # a malformed EXIF block: the pixels are still usable
                    orientation = 1
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused from its header ({exc})") from None
    except Exception as exc:  # PIL raises many types for a file it cannot identify
        raise ImageDecodeError(f"not a decodable image (its header: {type(exc).__name__}: {exc})") from None
    return width, height, orientation if 1 <= orientation <= 8 else 1


def photo_short_side(path: str | Path) -> int:
    """The short side of a photo file from its header alone (orientation does not change it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(path) as image:
            return min(image.size)


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as the camera meant them to be seen (EXIF orientation 1..8; PIL's
    ImageOps.exif_transpose in numpy)."""
    if orientation in (5, 6, 7, 8):
        img = img.transpose(1, 0, 2)  # swap the axes; each case then needs at most one flip
    flip = {2: (False, True), 3: (True, True), 4: (True, False), 5: (False, False),
            6: (False, True), 7: (True, True), 8: (True, False)}.get(orientation, (False, False))
    if flip[0]:
        img = img[::-1]
    if flip[1]:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def decode_photo(data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE) -> np.ndarray:
    """A user's photo (JPEG/PNG/WebP) to uint8 RGB (H, W, 3), EXIF orientation applied.

    Stricter than decode_image, which reads our own PNGs: the size is checked from the header
    before decoding (`max_pixels`), the short side must be at least `min_side` after the
    orientation, and a decoder error of any kind is an ImageDecodeError. A photo smaller than the
    build's resolution is kept (center_crop_resize upsamples it)."""
    if not data:
        raise ImageDecodeError("empty file")
    width, height, orientation = _header(data)
    if width * height > max_pixels:
        raise ImageDecodeError(f"decompression bomb: {width}x{height} = {width * height} pixels, "
                               f"over real.max_pixels = {max_pixels}; refused before decoding")
    try:
        img = decode_image(data)
    except cv2.error as exc:
        raise ImageDecodeError(f"not a decodable image (OpenCV: {str(exc).strip().splitlines()[-1]})") from None
    img = apply_orientation(img, orientation)
    if min(img.shape[:2]) < min_side:
        raise ImageDecodeError(f"image too small: {img.shape[1]}x{img.shape[0]}, short side under "
                               f"real.min_side = {min_side}")
    return img


def center_crop_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square on the short side, then resize to size x size.

    INTER_AREA when shrinking (no aliasing), INTER_CUBIC when growing (the 89x109 CelebA
    sample is upsampled to 128).
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3), got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = img[top:top + side, left:left + side]
    if side == size:
        return np.ascontiguousarray(square)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp)


def encode_png(img: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 RGB image."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3), got {img.dtype} {img.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """Tile (N, H, W, 3) images into one picture, row-major, padding the last row with black."""
    n, h, w, c = images.shape
    rows = max(1, -(-n // columns))
    grid = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = img
    return grid


def label_rows(grid: np.ndarray, labels: list[str], row_height: int,
               scale: float | None = None) -> np.ndarray:
    """The grid with a white margin on its left naming each row (one label per row_height),
    so a reader of a sample grid sees which class a row shows without the card beside it.
    The font scale follows the row height unless given."""
    scale = max(0.3, row_height / 160) if scale is None else scale
    thickness = max(1, round(scale * 2.5))
    widths = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0] for t in labels]
    margin = max(widths, default=0) + 2 * max(4, row_height // 16)
    out = np.full((grid.shape[0], margin + grid.shape[1], 3), 255, np.uint8)
    out[:, margin:] = grid
    for i, text in enumerate(labels):
        (_, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        y = i * row_height + (row_height + h) // 2
        cv2.putText(out, text, (max(4, row_height // 16), y), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return out

