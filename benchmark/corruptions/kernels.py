"""Compiled per-pixel loops (Numba) for the engine's element-wise corruptions.

NumPy would make one pass over the batch per operation, with a temporary each time; these do
the whole per-pixel formula in one pass and write uint8 directly, truncating as the reference's
`np.uint8(float)` does. Numba is already needed by the reference (its glass blur); the
compiled code is cached beside this file.
"""

from __future__ import annotations

import numba
import numpy as np

from benchmark.corruptions import legacy_random


@numba.njit(cache=True, inline="always")
def _to_u8(v):
    """uint8 of a float already in 0..255, truncated as NumPy's cast. Through int32: Numba's
    direct float-to-uint8 conversion is several times slower than the truncating int32 one,
    and the two agree on this range."""
    return np.uint8(np.int32(v))


@numba.njit(cache=True, inline="always")
def _unit_to_u8(v):
    """uint8 of clip(v, 0, 1) * 255, truncating as the reference's np.uint8(float)."""
    return _to_u8(min(max(v, np.float32(0.0)), np.float32(1.0)) * np.float32(255.0))


@numba.njit(cache=True)
def hsv_edit(x, v_add, s_mul, s_add):
    """HSV edit of uint8 (N, H, W, 3) RGB: v' = min(v + v_add, 1), s' = clip(s * s_mul + s_add).

    scikit-image's HSV round trip writes each channel as v * (1 - s * w) where the hue weight w
    is (v - channel) / (v - min), 0 for the largest channel and 1 for the smallest; grey pixels
    have hue 0 (pure red's weights 0, 1, 1). float64, as the reference.
    """
    out = np.empty_like(x)
    n, h, w, _ = x.shape
    unit = np.arange(256) / 255.0  # looked up: this loop is bound by its float64 divisions
    for i in range(n):
        for y in range(h):
            for z in range(w):
                r = unit[x[i, y, z, 0]]
                g = unit[x[i, y, z, 1]]
                b = unit[x[i, y, z, 2]]
                v = max(r, g, b)
                delta = v - min(r, g, b)
                s = delta / v if v > 0 else 0.0
                s2 = min(max(s * s_mul + s_add, 0.0), 1.0)
                v2 = min(v + v_add, 1.0)
                if delta > 0:
                    out[i, y, z, 0] = _hsv_channel(v2, s2, (v - r) / delta)
                    out[i, y, z, 1] = _hsv_channel(v2, s2, (v - g) / delta)
                    out[i, y, z, 2] = _hsv_channel(v2, s2, (v - b) / delta)
                else:
                    out[i, y, z, 0] = _hsv_channel(v2, s2, 0.0)
                    out[i, y, z, 1] = _hsv_channel(v2, s2, 1.0)
                    out[i, y, z, 2] = _hsv_channel(v2, s2, 1.0)
    return out


@numba.njit(cache=True, inline="always")
def _hsv_channel(v2, s2, weight):
    return _to_u8(min(max(v2 * (1.0 - s2 * weight), 0.0), 1.0) * 255.0)


@numba.njit(cache=True)
def _reflect(i, n):
    """scipy's 'reflect' extension (cba|abc|cba) of an integer index."""
    period = 2 * n
    i = i % period
    if i < 0:
        i += period
    return period - 1 - i if i >= n else i


@numba.njit(cache=True)
def remap_reflect(img, shift_rows, shift_cols):
    """uint8 of clip(scipy `map_coordinates(u, order=1, mode='reflect')`, 0, 1) * 255 with
    u = float32 img / 255, a uint8 (H, W, C) image, at (y + shift_rows, x + shift_cols) in
    float64 (the shifts are float32 fields): exact weights (OpenCV's remap quantises them to
    1/32 pixel), the reflected border only where a neighbour falls outside."""
    h, w, channels = img.shape
    out = np.empty(shift_rows.shape + (channels,), np.uint8)
    unit = np.empty(256)  # float64 of each level's float32 u, looked up instead of computed
    for level in range(256):
        unit[level] = np.float32(level) * np.float32(1 / 255)
    for y in range(shift_rows.shape[0]):
        for z in range(shift_rows.shape[1]):
            r = np.float64(y) + np.float64(shift_rows[y, z])
            c = np.float64(z) + np.float64(shift_cols[y, z])
            r0, c0 = np.floor(r), np.floor(c)
            fr, fc = r - r0, c - c0
            ra, ca = int(r0), int(c0)
            if 0 <= ra and ra + 1 < h and 0 <= ca and ca + 1 < w:
                rb, cb = ra + 1, ca + 1
            else:
                ra, rb = _reflect(ra, h), _reflect(ra + 1, h)
                ca, cb = _reflect(ca, w), _reflect(ca + 1, w)
            for k in range(channels):
                aa = unit[img[ra, ca, k]]
                ab = unit[img[ra, cb, k]]
                ba = unit[img[rb, ca, k]]
                bb = unit[img[rb, cb, k]]
                top = aa + (ab - aa) * fc
                bottom = ba + (bb - ba) * fc
                value = top + (bottom - top) * fr
                out[y, z, k] = _to_u8(min(max(value, 0.0), 1.0) * 255.0)
    return out


@numba.njit(cache=True, fastmath=True)
def shift_sum(padded, reach, dys, dxs, weights, height, width):
    """sum_t weights[t] * img[y - dys[t], x - dxs[t]] from an image padded by `reach` on every
    side (edge-replicated, so shifts clamp at the border as the reference's motion blur does).
    (H + 2R, W + 2R, C) float32 in, (H, W, C) float32 out. Whole rows are accumulated so the
    inner loop vectorises (fastmath only lets it fuse the multiply-add)."""
    channels = padded.shape[2]
    flat = padded.reshape(padded.shape[0], padded.shape[1] * channels)
    out = np.zeros((height, width * channels), np.float32)
    n = width * channels
    for y in range(height):
        dst = out[y]
        for t in range(weights.size):
            start = (reach - dxs[t]) * channels
            src = flat[y + reach - dys[t], start:start + n]
            wt = weights[t]
            for j in range(n):
                dst[j] += wt * src[j]
    return out.reshape(height, width, channels)


@numba.njit(cache=True)
def sample_levels(x, uniforms, thresholds, guide, level_bits, guide_bits):
    """Each value v of uint8 `x` replaced by the output level k whose CDF step holds its
    uniform u (the top `level_bits` of a uint32): k is the first level with u <
    thresholds[v, k], searched from guide[v, top `guide_bits` of u] (engine._noise_tables)."""
    out = np.empty_like(x)
    fx, fo = x.ravel(), out.ravel()
    shift = np.uint32(32 - level_bits)
    guide_shift = np.uint32(level_bits - guide_bits)
    for j in range(fx.size):
        u = uniforms[j] >> shift
        v = np.int64(fx[j])
        k = np.int64(guide[(v << guide_bits) + np.int64(u >> guide_shift)])
        base = v << 8
        while thresholds[base + k] <= u:
            k += 1
        fo[j] = np.uint8(k)
    return out


@numba.njit(cache=True)
def shift_levels(x, uniforms, thresholds, guide, level_bits, guide_bits):
    """Each value v of uint8 `x` replaced by clip(v + d - 255, 0, 255), where d is the first
    index with u < thresholds[d] for its uniform u (the top `level_bits` of a uint32),
    searched from guide[top `guide_bits` of u] (engine._gaussian_tables)."""
    out = np.empty_like(x)
    fx, fo = x.ravel(), out.ravel()
    shift = np.uint32(32 - level_bits)
    guide_shift = np.uint32(level_bits - guide_bits)
    for j in range(fx.size):
        u = uniforms[j] >> shift
        d = np.int64(guide[np.int64(u >> guide_shift)])
        while thresholds[d] <= u:
            d += 1
        fo[j] = np.uint8(min(max(np.int64(fx[j]) + d - 255, 0), 255))
    return out


@numba.njit(cache=True)
def fog_blend(x, layer, strength):
    """uint8 of clip((x / 255 + strength * layer) * top / (top + strength), 0, 1) * 255, where
    top is the image's largest value / 255 (the reference's `max_val`)."""
    h, w, channels = x.shape
    top = np.float32(x.max()) / np.float32(255.0)
    scale = top / (top + strength)
    out = np.empty_like(x)
    for y in range(h):
        for z in range(w):
            add = strength * layer[y, z]
            for k in range(channels):
                v = (np.float32(x[y, z, k]) / np.float32(255.0) + add) * scale
                out[y, z, k] = _unit_to_u8(v)
    return out


@numba.njit(cache=True, inline="always")
def _snow_value(u, keep, grey, flakes):
    return _unit_to_u8(keep * u + (np.float32(1.0) - keep) * max(u, grey) + flakes)


@numba.njit(cache=True)
def snow_blend(x, blurred, keep):
    """uint8 of clip(keep * u + (1 - keep) * max(u, grey * 1.5 + 0.5) + layer + layer rotated
    180 degrees, 0, 1) * 255 with u = x / 255 and OpenCV's RGB-to-grey weights, where layer is
    the motion-blurred flakes as the reference stores them: uint8(round(blurred * 255)) / 255
    (its PIL round trip), cut to the image."""
    h, w, _ = x.shape
    layer = np.empty((h, w), np.float32)
    for y in range(h):
        for z in range(w):
            level = _to_u8(np.rint(blurred[y, z] * np.float32(255.0)))
            layer[y, z] = np.float32(level) * np.float32(1 / 255)
    out = np.empty_like(x)
    for y in range(h):
        for z in range(w):
            r = np.float32(x[y, z, 0]) / np.float32(255.0)
            g = np.float32(x[y, z, 1]) / np.float32(255.0)
            b = np.float32(x[y, z, 2]) / np.float32(255.0)
            grey = (np.float32(0.299) * r + np.float32(0.587) * g + np.float32(0.114) * b) \
                * np.float32(1.5) + np.float32(0.5)
            flakes = layer[y, z] + layer[h - 1 - y, w - 1 - z]
            out[y, z, 0] = _snow_value(r, keep, grey, flakes)
            out[y, z, 1] = _snow_value(g, keep, grey, flakes)
            out[y, z, 2] = _snow_value(b, keep, grey, flakes)
    return out


@numba.njit(cache=True)
def spatter_blend(x, mask, colour, mud):
    """uint8 of the reference's spatter composite with u = x / 255: water adds mask * colour,
    mud replaces by colour in proportion to the mask; clipped to 0..1, times 255."""
    h, w, channels = x.shape
    out = np.empty_like(x)
    for y in range(h):
        for z in range(w):
            m = mask[y, z]
            for k in range(channels):
                u = np.float32(x[y, z, k]) / np.float32(255.0)
                v = u * (np.float32(1.0) - m) + colour[k] * m if mud else u + m * colour[k]
                out[y, z, k] = _unit_to_u8(v)
    return out


@numba.njit(cache=True)
def impulse(x, flip_draws, salt_draws, amount):
    """scikit-image's s&p noise given its two uniform draws per value: a value flips when its
    first draw is <= amount, to 255 (salt) when its second is <= 0.5, else to 0 (pepper)."""
    out = np.empty_like(x)
    fx, ff, fs, fo = x.ravel(), flip_draws.ravel(), salt_draws.ravel(), out.ravel()
    for j in range(fx.size):
        if ff[j] <= amount:
            fo[j] = 255 if fs[j] <= 0.5 else 0
        else:
            fo[j] = fx[j]
    return out


@numba.njit(cache=True)
def blend_layer(x, layer, a, b):
    """uint8 of clip(a * x + b * layer, 0, 255) for a uint8 image and a float32 layer (frost)."""
    out = np.empty_like(x)
    h, w, channels = x.shape
    for y in range(h):
        for z in range(w):
            for k in range(channels):
                v = a * np.float32(x[y, z, k]) + b * layer[y, z, k]
                out[y, z, k] = _to_u8(min(max(v, np.float32(0.0)), np.float32(255.0)))
    return out


@numba.njit(cache=True, inline="always")
def _wibbled(a, b, wibble, draw):
    """(a + b) / 4 in float32 plus the float64 offset wibble * uniform(-wibble, wibble), stored
    as float32: the reference's `array / 4 + wibble * np.random.uniform(...)`."""
    return np.float32(np.float32((a + b) / np.float32(4)) + wibble * (-wibble + 2 * wibble * draw))


@numba.njit(cache=True)
def plasma(draws, mapsize, wibbledecay):
    """The reference's diamond-square height map from its uniform draws (ops.plasma_fractals).

    Same arithmetic as the reference's NumPy code: float32 map, neighbour sums paired as it
    pairs them (float32 addition is not associative), the float64 offset added before the
    float32 store, wrap-around neighbours (its np.roll)."""
    amap = np.empty((mapsize, mapsize), np.float32)
    amap[0, 0] = 0
    step = mapsize
    wibble = 100.0
    t = 0
    while step >= 2:
        half = step // 2
        side = mapsize // step
        for i in range(side):  # squares: centre = mean of its 4 corners + offset
            for j in range(side):
                r0, r1 = i * step, ((i + 1) % side) * step
                c0, c1 = j * step, ((j + 1) % side) * step
                a = amap[r0, c0] + amap[r1, c0]
                b = amap[r0, c1] + amap[r1, c1]
                amap[r0 + half, c0 + half] = _wibbled(a, b, wibble, draws[t])
                t += 1
        for i in range(side):  # diamonds on the corner rows
            for j in range(side):
                r0, c0 = i * step, j * step
                up, right = ((i - 1) % side) * step, ((j + 1) % side) * step
                a = amap[r0 + half, c0 + half] + amap[up + half, c0 + half]
                b = amap[r0, c0] + amap[r0, right]
                amap[r0, c0 + half] = _wibbled(a, b, wibble, draws[t])
                t += 1
        for i in range(side):  # diamonds on the corner columns
            for j in range(side):
                r0, c0 = i * step, j * step
                down, left = ((i + 1) % side) * step, ((j - 1) % side) * step
                a = amap[r0 + half, c0 + half] + amap[r0 + half, left + half]
                b = amap[r0, c0] + amap[down, c0]
                amap[r0 + half, c0] = _wibbled(a, b, wibble, draws[t])
                t += 1
        step //= 2
        wibble /= wibbledecay
    amap -= amap.min()
    return amap / amap.max()


@numba.njit(cache=True)
def glass_shuffle_seeded(x, max_delta, iterations, seed):
    """The reference's glass-blur pixel loop, drawing as it does, in place.

    The reference seeds Numba's generator with `seed` and calls `randint(-max_delta,
    max_delta, size=(2,))` (dx, dy) per pixel visit; Numba's generator is NumPy's legacy
    MT19937 with the same integer seeding and masked rejection (the low bits of one output,
    redrawn while above the range), drawn here from legacy_random's stream. The reference
    writes `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on array views, which copies pixel
    (h', w') onto (h, w) rather than swapping; this loop does that copy, in the same order
    (rows and columns from the far end).
    """
    height, width, channels = x.shape
    state = legacy_random.seeded(seed)
    block = np.empty(legacy_random.N, np.uint32)
    limit = np.uint32(2 * max_delta - 1)
    mask = limit
    for shift in (1, 2, 4, 8, 16):
        mask |= mask >> np.uint32(shift)
    # a power-of-two range never rejects: each visit then reads the next two words of the
    # block (an even number of them, so they never straddle a refill). Otherwise the accepted
    # draws are collected a block at a time (the rejection test vectorises there) and read
    # two per visit, a draw left over carried to the front.
    exact = mask == limit
    accepted = np.empty(legacy_random.N + 1, np.int64)
    count = 0
    pos = legacy_random.N if exact else 0
    for _ in range(iterations):
        for h in range(height - max_delta, max_delta, -1):
            for w in range(width - max_delta, max_delta, -1):
                if exact:
                    if pos >= legacy_random.N:
                        legacy_random.refill(state, block)
                        pos = 0
                    dx = np.int64(block[pos] & mask) - max_delta
                    dy = np.int64(block[pos + 1] & mask) - max_delta
                    pos += 2
                    for c in range(channels):
                        x[h, w, c] = x[h + dy, w + dx, c]
                    continue
                while count - pos < 2:
                    if pos < count:
                        accepted[0] = accepted[pos]
                    count -= pos
                    pos = 0
                    legacy_random.refill(state, block)
                    for word in block:
                        v = word & mask
                        accepted[count] = np.int64(v) - max_delta
                        count += v <= limit
                dx, dy = accepted[pos], accepted[pos + 1]
                pos += 2
                for c in range(channels):
                    x[h, w, c] = x[h + dy, w + dx, c]
    return x


@numba.njit(cache=True)
def zoom_mean(img, rows_lo, rows_hi, rows_t, cols_lo, cols_hi, cols_t):
    """uint8 of clip((sum of the zooms + img) / (zooms + 1)) for a uint8 (H, W, 3) image,
    zoom z being the bilinear resampling at rows rows_lo[z] + rows_t[z] * (hi - lo) and the
    same for columns ((zooms, H) and (zooms, W) index and weight tables, ops.zoom_taps).

    Separable and row by row: each zoom's two source rows are blended once (a vectorised
    pass), then its columns gathered into the row's running sum, so no zoomed image is ever
    stored. float32, summed zoom by zoom then the image last, as the reference does."""
    h, w, _ = img.shape
    zooms = rows_lo.shape[0]
    n = w * 3
    src = img.reshape(h, n).astype(np.float32)
    out = np.empty((h, n), np.uint8)
    total = np.empty(n, np.float32)
    row = np.empty(n, np.float32)
    count = np.float32(zooms + 1)
    for y in range(h):
        total[:] = 0
        for z in range(zooms):
            a, b, t = src[rows_lo[z, y]], src[rows_hi[z, y]], rows_t[z, y]
            for j in range(n):
                row[j] = a[j] + (b[j] - a[j]) * t
            for x in range(w):
                lo, hi, t = 3 * cols_lo[z, x], 3 * cols_hi[z, x], cols_t[z, x]
                total[3 * x] += row[lo] + (row[hi] - row[lo]) * t
                total[3 * x + 1] += row[lo + 1] + (row[hi + 1] - row[lo + 1]) * t
                total[3 * x + 2] += row[lo + 2] + (row[hi + 2] - row[lo + 2]) * t
        for j in range(n):
            v = (total[j] + src[y, j]) / count
            out[y, j] = _to_u8(min(max(v, np.float32(0.0)), np.float32(255.0)))
    return out.reshape(h, w, 3)


@numba.njit(cache=True)
def box_resample(img, row_taps, col_taps, out):
    """Pillow's 8-bit two-pass resampling of a uint8 (H, W, C) image into `out` (h, w, C):
    columns first, over the rows the second pass reads, rounded and clipped to uint8, then rows.
    Each pass sums value * fixed-point weight from half a unit, and keeps the top bits (the taps:
    ops.pillow_box_taps)."""
    row_first, row_count, row_weights = row_taps
    col_first, col_count, col_weights = col_taps
    h, w, _ = out.shape
    top = row_first[0]
    bottom = row_first[h - 1] + row_count[h - 1]
    half = np.int32(1 << 21)
    # three accumulators per pixel (RGB), int32 as Pillow's (the sums stay below 2**31)
    temp = np.empty((bottom - top, w, 3), np.uint8)
    for y in range(top, bottom):
        for x in range(w):
            a0 = a1 = a2 = half
            for t in range(col_count[x]):
                k = col_weights[x, t]
                col = col_first[x] + t
                a0 += np.int32(img[y, col, 0]) * k
                a1 += np.int32(img[y, col, 1]) * k
                a2 += np.int32(img[y, col, 2]) * k
            temp[y - top, x, 0] = min(max(a0 >> 22, 0), 255)
            temp[y - top, x, 1] = min(max(a1 >> 22, 0), 255)
            temp[y - top, x, 2] = min(max(a2 >> 22, 0), 255)
    flat = temp.reshape(bottom - top, w * 3)
    acc = np.empty(w * 3, np.int32)
    for y in range(h):
        acc[:] = half
        for t in range(row_count[y]):
            k = row_weights[y, t]
            src = flat[row_first[y] - top + t]
            for j in range(w * 3):  # whole rows: this pass vectorises
                acc[j] += np.int32(src[j]) * k
        dst = out[y].reshape(w * 3)
        for j in range(w * 3):
            dst[j] = min(max(acc[j] >> 22, 0), 255)
    return out


@numba.njit(cache=True)
def nearest_upsample(small, rows, cols, out):
    """out[y, x] = small[rows[y], cols[x]] for uint8 (h, w, 3) images; a row that repeats the
    row above is copied whole."""
    h, w, _ = out.shape
    sh, sw, _ = small.shape
    index = np.empty(w * 3, np.int64)  # flat source offset of each output value in a row
    for x in range(w):
        for c in range(3):
            index[3 * x + c] = 3 * cols[x] + c
    src = small.reshape(sh, sw * 3)
    dst = out.reshape(h, w * 3)
    for y in range(h):
        if y > 0 and rows[y] == rows[y - 1]:
            dst[y] = dst[y - 1]
            continue
        row = src[rows[y]]
        for j in range(w * 3):
            dst[y, j] = row[index[j]]
    return out
