"""The fast ImageNet-C engine: the 19 corruptions of `imagecorruptions` on uint8 (N, H, W, 3).

Parameter tables are those of the reference (imagecorruptions-imaug 1.1.5, `corruptions.py`).
Every function returns float32 on the 0..255 scale, which `finish` clips and truncates to uint8
as the reference's `np.uint8(...)` does, or uint8 already (compiled kernels, LUTs, codecs).

Randomness, per image, from that image's seed only (so the batch split never matters):
- Random *parameters and layers* (motion-blur angle, fog's plasma fractal, frost's image and
  crop, snow's flakes and angle, spatter's liquid, elastic's displacement field) come from
  `np.random.RandomState(seed)`, the legacy generator the reference's global `np.random.seed`
  drives, and are drawn in the reference's order: given the same seed, the engine and the
  reference draw the same numbers, so those corruptions can be compared exactly. Snow's,
  spatter's, elastic's and fog's draws come from the same stream computed in compiled code
  (legacy_random.py), bit for bit NumPy's, in the loops that use them.
- impulse_noise draws from `np.random.default_rng(seed)` exactly as scikit-image's s&p noise.
- glass_blur's pixel loop uses the reference's draws from Numba's generator (NumPy's legacy
  MT19937, same seeding, same masked rejection), made in the compiled loop (legacy_random.py).
- gaussian, shot and speckle noise draw one uniform per value from `PCG64(seed)` and turn it
  into the output grey level by the exact output distribution (see `_noise_cdf` and
  `_gaussian_tables`): the same distribution as the reference, not the same numbers.
"""

from __future__ import annotations

import importlib.resources
import threading
from functools import lru_cache
from typing import Callable, Sequence

import cv2
import numpy as np

from benchmark.corruptions import kernels, legacy_random, ops

F32 = np.float32


_THREAD = threading.local()


def _legacy(seed: int) -> np.random.RandomState:
    """The legacy generator seeded with `seed`, as `np.random.RandomState(seed)` would be.

    One instance per thread, re-seeded on each call: constructing a RandomState first seeds it
    from OS entropy (~0.1 ms, as much as a whole small-image corruption), `seed()` does not; and
    re-seeding resets the cached second normal, so the draws are those of a fresh instance.
    """
    rs = getattr(_THREAD, "legacy", None)
    if rs is None:
        rs = _THREAD.legacy = np.random.RandomState()
    rs.seed(seed)
    return rs


def _unit(x: np.ndarray) -> np.ndarray:
    return x.astype(F32) * F32(1 / 255)


# --- noise ---------------------------------------------------------------------------------

# gaussian, shot and speckle noise turn each grey level v into a random output level whose
# distribution depends on v alone: uint8(clip(v/255 + c*N) * 255) = clip(v + floor(255*c*N)),
# uint8(clip(v/255 * (1 + c*N)) * 255) = clip(v + floor(v*c*N)), uint8(clip(Poisson(v/255*c)
# / c) * 255). So the engine tabulates those distributions once per severity (one shared by
# all levels for gaussian noise, 256 for the others) and draws the output level itself from
# one uniform, by inverse CDF: exact in distribution (to 2**-31), and one 32-bit uniform per
# value is far cheaper than a normal or a Poisson variate.

LEVEL_BITS = 31  # uniforms are the top 31 bits of 32, so a CDF of 1 still fits in uint32
GUIDE_BITS = 10  # 1024 guide bins per grey level: mostly no step of the search (256 KB)


def _noise_cdf(name: str, severity: int) -> np.ndarray:
    """P(output level <= k | input level v) as a float64 (256, 256) array [v, k], for shot or
    speckle noise."""
    from scipy.stats import norm, poisson

    v = np.arange(256, dtype=np.float64)[:, None]
    k = np.arange(256, dtype=np.float64)[None, :]
    if name == "speckle_noise":
        c = [.15, .2, 0.35, 0.45, 0.6][severity - 1]
        with np.errstate(divide="ignore"):
            cdf = norm.cdf((k - v + 1) / (v * c))  # v = 0: 1 / 0 = inf, level 0 always
        cdf[0] = 1.0
    else:
        c = [60, 25, 12, 5, 3][severity - 1]
        counts = np.arange(c + 1)  # Poisson counts; all counts >= c give level 255
        levels = np.uint8(np.clip(counts / float(c), 0, 1) * 255)
        pmf = poisson.pmf(counts[None, :], v / 255.0 * c)
        pmf[:, -1] = poisson.sf(c - 1, v[:, 0] / 255.0 * c)
        cdf = np.zeros((256, 256))
        np.add.at(cdf, (slice(None), levels), pmf)
        cdf = np.cumsum(cdf, axis=1)
    cdf[:, 255] = 1.0
    return np.clip(cdf, 0.0, 1.0)


@lru_cache(maxsize=16)
def _noise_tables(name: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer CDF thresholds (uint32, [v, k] flattened: output k while uniform < threshold)
    and guide tables (uint8, [v, bin]: the first k whose threshold passes the bin's start)."""
    thresholds = np.rint(_noise_cdf(name, severity) * 2.0 ** LEVEL_BITS).astype(np.uint32)
    starts = np.arange(1 << GUIDE_BITS, dtype=np.uint32) << (LEVEL_BITS - GUIDE_BITS)
    guide = np.stack([np.searchsorted(row, starts, side="right") for row in thresholds])
    return thresholds.ravel(), np.minimum(guide, 255).astype(np.uint8).ravel()


def _level_noise(name: str, x: np.ndarray, severity: int, seeds: Sequence[int]) -> np.ndarray:
    thresholds, guide = _noise_tables(name, severity)
    out = np.empty_like(x)
    for i, (img, s) in enumerate(zip(x, seeds)):
        # 64-bit words of PCG64, two 32-bit uniforms each
        words = np.random.PCG64(s).random_raw((img.size + 1) // 2).view(np.uint32)
        out[i] = kernels.sample_levels(img, words, thresholds, guide, LEVEL_BITS, GUIDE_BITS)
    return out


SHIFT_GUIDE_BITS = 12  # guide bins of gaussian noise's one table (8 KB, stays in L1)


@lru_cache(maxsize=8)
def _gaussian_tables(severity: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian noise adds the same D = floor(255 * c * N) to every level, so one table does:
    thresholds of P(D <= d) for d = -255..255 (D beyond +-255 clips alike, so it is lumped
    into the ends) and a uint16 guide into them."""
    from scipy.stats import norm

    c = [.08, .12, 0.18, 0.26, 0.38][severity - 1]
    cdf = norm.cdf((np.arange(-255, 256) + 1) / (255 * c))
    cdf[-1] = 1.0
    thresholds = np.rint(cdf * 2.0 ** LEVEL_BITS).astype(np.uint32)
    starts = np.arange(1 << SHIFT_GUIDE_BITS, dtype=np.uint32) << (LEVEL_BITS - SHIFT_GUIDE_BITS)
    return thresholds, np.searchsorted(thresholds, starts, side="right").astype(np.uint16)


def gaussian_noise(x, severity, seeds):
    thresholds, guide = _gaussian_tables(severity)
    out = np.empty_like(x)
    for i, (img, s) in enumerate(zip(x, seeds)):
        words = np.random.PCG64(s).random_raw((img.size + 1) // 2).view(np.uint32)
        out[i] = kernels.shift_levels(img, words, thresholds, guide, LEVEL_BITS,
                                      SHIFT_GUIDE_BITS)
    return out


def shot_noise(x, severity, seeds):
    return _level_noise("shot_noise", x, severity, seeds)


def impulse_noise(x, severity, seeds):
    """scikit-image's s&p noise with the reference's draws: `default_rng(seed)`, one uniform per
    value for "flipped" (<= amount), then one for "salt" (<= 0.5), else pepper."""
    c = [.03, .06, .09, 0.17, 0.27][severity - 1]
    out = np.empty_like(x)
    # the draws go to buffers reused image after image: a fresh megabyte array per draw costs
    # page faults comparable to the draws themselves
    flips, salts = np.empty(x.shape[1:]), np.empty(x.shape[1:])
    for i, (img, s) in enumerate(zip(x, seeds)):
        rng = np.random.default_rng(s)
        rng.random(out=flips)
        rng.random(out=salts)
        out[i] = kernels.impulse(img, flips, salts, c)
    return out


def speckle_noise(x, severity, seeds):
    return _level_noise("speckle_noise", x, severity, seeds)


# --- blur ----------------------------------------------------------------------------------

def gaussian_blur(x, severity, seeds):
    c = [1, 2, 3, 4, 6][severity - 1]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        out[i] = _u8(ops.gaussian(img.astype(F32), c))
    return out


def glass_blur(x, severity, seeds):
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][
        severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, (img, s) in enumerate(zip(x, seeds)):
        blurred = (ops.gaussian(_unit(img), sigma) * 255).astype(np.uint8)
        shuffled = kernels.glass_shuffle_seeded(blurred, delta, iterations, s)
        out[i] = _u8(ops.gaussian(shuffled.astype(F32), sigma))
    return out


def defocus_blur(x, severity, seeds):
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    kernel = ops.disk_kernel(radius, alias)
    # float64, as the reference: its kernel sums to 1 - 4e-9 at low severities, so flat areas
    # land a hair below a whole grey level and truncate one level down; float32 rounding
    # would hide that hair and differ by a level over whole flat regions
    out = np.empty_like(x)
    for i, img in enumerate(x):  # uint8 in, float64 out: OpenCV converts as it goes
        out[i] = _u8(cv2.filter2D(img, cv2.CV_64F, kernel))
    return out


def motion_blur(x, severity, seeds):
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, (img, s) in enumerate(zip(x, seeds)):
        angle = _legacy(s).uniform(-45, 45)
        offsets = ops.motion_offsets(radius, sigma, angle, h, w)
        out[i] = _u8(ops.motion_blur(img.astype(F32), offsets))
    return out


def zoom_blur(x, severity, seeds):
    """Mean of the image and its centre zooms. Each zoom is the reference's clipped_zoom (scipy
    `zoom(order=1)`: corner-aligned, in = top + out * (crop - 1) / (zoomed - 1)), cut to the
    image; as it is separable, one compiled pass per image does all zooms (kernels.zoom_mean)."""
    zooms = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][severity - 1]
    h, w = x.shape[1:3]
    rows = [np.stack(t) for t in zip(*(ops.zoom_taps(h, float(z)) for z in zooms))]
    cols = [np.stack(t) for t in zip(*(ops.zoom_taps(w, float(z)) for z in zooms))]
    out = np.empty_like(x)
    for i, img in enumerate(x):
        out[i] = kernels.zoom_mean(img, *rows, *cols)
    return out


# --- weather -------------------------------------------------------------------------------

def snow(x, severity, seeds):
    c = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][severity - 1]
    h, w = x.shape[1:3]
    # the zoom reads only a central crop of the layer: only its normals need computing
    (top, crop_h, _), (left, crop_w, _) = ops.zoom_crop(h, c[2]), ops.zoom_crop(w, c[2])
    window = (top, top + crop_h, left, left + crop_w)
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, (img, s) in enumerate(zip(x, seeds)):
        layer = np.empty((h, w), F32)  # the reference's float64 draws, stored as float32
        generator = legacy_random.normals(s, layer, c[0], c[1], window)
        angle = -135 + 90 * legacy_random.next_double(*generator)[0]  # its uniform(-135, -45)
        # the whole zoomed layer is blurred and only then cut to the image, as the reference
        layer = ops.clipped_zoom(layer, c[2], full=True)
        layer[layer < c[3]] = 0
        layer = np.clip(layer, 0, 1)
        offsets = ops.motion_offsets(c[4], c[5], angle, h, w)
        out[i] = kernels.snow_blend(img, ops.motion_blur(layer, offsets), F32(c[6]))
    return out


@lru_cache(maxsize=64)
def _frost_layer(index: int, height: int, width: int) -> np.ndarray:
    """Frost photo `index` (shipped in the reference package's `frost/` data), rescaled as the
    reference does for an image of this size; RGB float32. Cached: the reference re-reads and
    re-scales the file on every call."""
    name = [f"frost{i}.png" for i in (1, 2, 3)] + [f"frost{i}.jpg" for i in (4, 5, 6)]
    name = name[index]
    ref = importlib.resources.files("imagecorruptions") / "frost" / name
    with importlib.resources.as_file(ref) as path:
        frost = cv2.imread(str(path))
    if frost is None:
        raise FileNotFoundError(f"frost image {ref} is missing from the imagecorruptions package")
    fh, fw = frost.shape[:2]
    if fh >= height and fw >= width:
        scale = 1
    elif fh < height and fw >= width:
        scale = height / fh
    elif fh >= height and fw < width:
        scale = width / fw
    else:
        scale = np.maximum(height / fh, width / fw)
    scale *= 1.1
    size = (int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))
    return cv2.resize(frost, dsize=size, interpolation=cv2.INTER_CUBIC)[..., ::-1].astype(F32)


def frost(x, severity, seeds):
    a, b = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, (img, s) in enumerate(zip(x, seeds)):
        rs = _legacy(s)
        layer = _frost_layer(rs.randint(6), h, w)
        top = rs.randint(0, layer.shape[0] - h)
        left = rs.randint(0, layer.shape[1] - w)
        out[i] = kernels.blend_layer(img, layer[top:top + h, left:left + w], F32(a), F32(b))
    return out


def fog(x, severity, seeds):
    strength, decay = [(1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4)][severity - 1]
    h, w = x.shape[1:3]
    mapsize = 1 << (max(h, w, 3) - 1).bit_length()
    return np.stack([
        kernels.fog_blend(img, ops.plasma_fractal(s, mapsize, decay)[:h, :w],
                          F32(strength))
        for img, s in zip(x, seeds)])


def spatter(x, severity, seeds):
    c = [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
         (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)][severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, (img, s) in enumerate(zip(x, seeds)):
        drops = np.empty((h, w), F32)  # the reference's float64 draws, stored as float32
        legacy_random.normals(s, drops, c[0], c[1], (0, h, 0, w))
        liquid = ops.gaussian(drops, c[2])
        liquid[liquid < c[3]] = 0
        if c[5] == 0:  # water: edges of the liquid mask, embossed, tinted pale turquoise
            liquid = (liquid * 255).astype(np.uint8)
            dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
            emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
            dist = cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(F32)
            m = liquid * dist
            m = m / m.max() * F32(c[4])
            # the reference builds a BGR colour but adds it to the RGB image as is
            colour = np.array([175, 238, 238], F32) / 255
            out[i] = kernels.spatter_blend(img, m, colour, False)
        else:  # mud: a blurred, thresholded mask of brown
            m = ops.gaussian((liquid > c[3]).astype(F32), c[4])
            m[m < 0.8] = 0
            colour = np.array([63, 42, 20], F32) / 255
            out[i] = kernels.spatter_blend(img, m, colour, True)
    return out


# --- digital -------------------------------------------------------------------------------

def contrast(x, severity, seeds):
    """(x - mean) * c + mean per channel: a function of the grey level, so one 256-entry lookup
    table per image and channel, computed in float64 and truncated exactly as the reference."""
    c = [0.4, .3, .2, .1, .05][severity - 1]
    levels = np.arange(256, dtype=np.float64)[:, None] / 255.
    out = np.empty_like(x)
    for i, img in enumerate(x):
        means = np.asarray(cv2.mean(img)[:3]) / 255.
        table = np.uint8(np.clip((levels - means) * c + means, 0, 1) * 255)
        out[i] = cv2.LUT(img, table[:, None, :])
    return out


def brightness(x, severity, seeds):
    """V += c in HSV (scikit-image's round trip, as one compiled per-pixel pass)."""
    c = [.1, .2, .3, .4, .5][severity - 1]
    return kernels.hsv_edit(x, c, 1.0, 0.0)


def saturate(x, severity, seeds):
    """S = clip(S * a + b) in HSV (scikit-image's round trip, as one compiled per-pixel pass)."""
    a, b = [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)][severity - 1]
    return kernels.hsv_edit(x, 0.0, float(a), float(b))


def jpeg_compression(x, severity, seeds):
    """libjpeg through OpenCV with Pillow's defaults (4:2:0 chroma, islow DCT, same tables)."""
    quality = [25, 18, 15, 10, 7][severity - 1]
    out = np.empty_like(x)  # filled image by image: no stacking copy of the batch
    for i, img in enumerate(x):
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError("OpenCV could not JPEG-encode the image")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
    return out


def pixelate(x, severity, seeds):
    """Pillow's BOX down then NEAREST up, as the reference, both reproduced byte for byte:
    the BOX step with Pillow's fixed-point taps (ops.pillow_box_taps, kernels.box_resample),
    the NEAREST step as a gather of Pillow's source indices."""
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    h, w = x.shape[1:3]
    sh, sw = int(h * c), int(w * c)
    row_taps, col_taps = ops.pillow_box_taps(h, sh), ops.pillow_box_taps(w, sw)
    rows, cols = _nearest_index(sh, h), _nearest_index(sw, w)
    small = np.empty((sh, sw, 3), np.uint8)
    out = np.empty_like(x)
    for img, dst in zip(x, out):
        kernels.box_resample(img, row_taps, col_taps, small)
        kernels.nearest_upsample(small, rows, cols, dst)
    return out


@lru_cache(maxsize=64)
def _nearest_index(size_in: int, size_out: int) -> np.ndarray:
    """Pillow's NEAREST source index for each output pixel. Pillow steps the source coordinate
    by repeated addition from 0.5 * scale (ImagingScaleAffine), so the rounding of that running
    sum, not floor((i + 0.5) * scale), decides the index at exact-looking boundaries."""
    scale = size_in / size_out
    index = np.empty(size_out, np.int64)
    pos = scale * 0.5
    for i in range(size_out):
        index[i] = min(int(pos), size_in - 1)
        pos += scale
    return index


def elastic_transform(x, severity, seeds):
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    h, w = x.shape[1:3]
    sigma = (h * 0.01, w * 0.01)
    reach = h * 0.005
    out = np.empty_like(x)
    for i, (img, s) in enumerate(zip(x, seeds)):
        # the reference's two uniform(-reach, reach, (h, w)) draws, stored as float32 for a
        # float32 blur: the field is cast to float32 anyway
        draws = legacy_random.uniforms(s, np.empty((2, h, w), F32), -reach, reach)
        dx, dy = (ops.gaussian(d, sigma, truncate=3, border=ops.BORDER_REFLECT) * F32(alpha)
                  for d in draws)
        out[i] = kernels.remap_reflect(img, dy, dx)
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, int, Sequence[int]], np.ndarray]] = {
    f.__name__: f for f in (
        gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur, motion_blur,
        zoom_blur, snow, frost, fog, brightness, contrast, elastic_transform, pixelate,
        jpeg_compression, speckle_noise, gaussian_blur, spatter, saturate)
}


def _u8(x: np.ndarray) -> np.ndarray:
    """uint8 of a 0..255 float image, clipped and truncated as the reference's np.uint8."""
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def finish(out: np.ndarray) -> np.ndarray:
    """uint8 as the reference: clip to 0..255, then truncate (its `np.uint8(float)`)."""
    if out.dtype == np.uint8:
        return out
    return np.clip(out, 0, 255).astype(np.uint8)


def corrupt(x: np.ndarray, name: str, severity: int, seeds: Sequence[int]) -> np.ndarray:
    """Corrupt a validated uint8 (N, H, W, 3) batch; `seeds` are 32-bit, one per image."""
    return finish(CORRUPTIONS[name](x, severity, seeds))
