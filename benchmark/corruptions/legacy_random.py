"""NumPy's legacy `RandomState(seed)` stream (MT19937) inside compiled loops.

The reference draws its normals (snow, spatter) and uniforms (elastic's field, fog's plasma)
from NumPy's legacy generator and its glass-blur offsets from Numba's, which is the same MT19937
with the same integer seeding. Drawing them here, inside the loop that uses them, gives the
same numbers without the generator's per-value call overhead or a large array of draws in
between (and lets snow skip the normals it never reads); tests/benchmark/test_corruptions.py
checks every function against NumPy.

A generator is the state (624 uint32 words, `seeded`), a block of 624 tempered outputs and a
read position in it, which each consumer keeps in a local variable.
Numba's own `np.random` would do too, but it keeps one hidden state per thread and its
per-call overhead makes it slower than this.
"""

from __future__ import annotations

import numba
import numpy as np

N = 624
M = 397


@numba.njit(cache=True)
def seeded(seed):
    """The state of `RandomState(seed)` (Knuth's initialisation, as NumPy's `mt19937_seed`)."""
    state = np.empty(N, np.uint32)
    s = np.uint64(seed) & np.uint64(0xFFFFFFFF)
    for i in range(N):
        state[i] = np.uint32(s)
        s = (np.uint64(1812433253) * (s ^ (s >> np.uint64(30))) + np.uint64(i + 1)) \
            & np.uint64(0xFFFFFFFF)
    return state


@numba.njit(cache=True)
def _mix(state, i, j, k):
    y = (state[i] & np.uint32(0x80000000)) | (state[j] & np.uint32(0x7FFFFFFF))
    v = state[k] ^ (y >> np.uint32(1))
    if y & np.uint32(1):
        v ^= np.uint32(0x9908B0DF)
    state[i] = v


@numba.njit(cache=True)
def refill(state, block):
    """Advance the state by one MT19937 twist and write its 624 tempered outputs to `block`."""
    for i in range(N - M):  # the three ranges of the twist, without a modulo per word
        _mix(state, i, i + 1, i + M)
    for i in range(N - M, N - 1):
        _mix(state, i, i + 1, i + M - N)
    _mix(state, N - 1, 0, M - 1)
    for i in range(N):
        y = state[i]
        y ^= y >> np.uint32(11)
        y ^= (y << np.uint32(7)) & np.uint32(0x9D2C5680)
        y ^= (y << np.uint32(15)) & np.uint32(0xEFC60000)
        y ^= y >> np.uint32(18)
        block[i] = y


@numba.njit(cache=True)
def next_double(state, block, pos):
    """(`random_sample()`, the new position): 53 random bits from two outputs, in [0, 1).
    For single draws; hot loops read the block themselves, as `normals` does."""
    if pos >= N:
        refill(state, block)
        pos = 0
    a = np.float64(block[pos] >> np.uint32(5))
    pos += 1
    if pos >= N:
        refill(state, block)
        pos = 0
    b = np.float64(block[pos] >> np.uint32(6))
    return (a * 67108864.0 + b) / 9007199254740992.0, pos + 1


@numba.njit(cache=True)
def normals(seed, out, loc, scale, window):
    """Fill 2-D `out` as `RandomState(seed).normal(loc, scale, out.shape)` does: the polar
    method, each accepted pair giving f * x2 then f * x1 (an odd count leaves the last pair's
    second value unused, as NumPy keeps it for a later call). Returns the state, block and
    position, to draw on from where NumPy's generator would be.

    Only values inside `window` = (row start, row stop, column start, column stop) are
    computed, the rest set to `loc`: the whole stream is drawn and tested for rejection, but
    the logarithm and square root, most of the cost, are skipped where a caller reads nothing
    (snow uses only a central crop of its layer). Two passes: the rejection walk, then the
    branch-free transform of the accepted pairs, which pipelines far better than one loop.
    """
    state, block, pos = seeded(seed), np.empty(N, np.uint32), N
    height, width = out.shape
    n = height * width
    pairs = (n + 1) // 2
    xs = np.empty(2 * pairs)  # x2, x1 of each accepted pair, in output order
    r2s = np.empty(pairs)
    k = 0
    while k < pairs:
        if pos >= N:  # a pair takes four words, and N is a multiple of four
            refill(state, block)
            pos = 0
        u1 = ((block[pos] >> np.uint32(5)) * 67108864.0 + (block[pos + 1] >> np.uint32(6))) \
            / 9007199254740992.0
        u2 = ((block[pos + 2] >> np.uint32(5)) * 67108864.0
              + (block[pos + 3] >> np.uint32(6))) / 9007199254740992.0
        pos += 4
        x1, x2 = 2.0 * u1 - 1.0, 2.0 * u2 - 1.0
        r2 = x1 * x1 + x2 * x2
        xs[2 * k] = x2
        xs[2 * k + 1] = x1
        r2s[k] = r2
        k += (r2 < 1.0) & (r2 != 0.0)  # a rejected pair is overwritten by the next
    top, bottom = max(window[0], 0), min(window[1], height)
    left, right = max(window[2], 0), min(window[3], width)
    out[:] = loc
    done = 0  # pairs before this one are transformed (a pair can straddle two rows)
    for y in range(top, bottom):
        first = max((y * width + left) // 2, done)
        done = max((y * width + right + 1) // 2, first)
        for k in range(first, done):
            f = np.sqrt(-2.0 * np.log(r2s[k]) / r2s[k])
            xs[2 * k] = loc + scale * (f * xs[2 * k])
            xs[2 * k + 1] = loc + scale * (f * xs[2 * k + 1])
        for z in range(left, right):
            out[y, z] = xs[y * width + z]
    return state, block, pos


@numba.njit(cache=True)
def uniforms(seed, out, low, high):
    """Fill `out` as `RandomState(seed).uniform(low, high, out.shape)` does (low + (high - low)
    * random_sample()), stored in out's dtype."""
    state, block = seeded(seed), np.empty(N, np.uint32)
    flat = out.ravel()
    span = high - low
    i = 0
    while i < flat.size:
        refill(state, block)
        for j in range(min(N // 2, flat.size - i)):  # a double takes two words
            a = np.float64(block[2 * j] >> np.uint32(5))
            b = np.float64(block[2 * j + 1] >> np.uint32(6))
            flat[i + j] = low + span * ((a * 67108864.0 + b) / 9007199254740992.0)
        i += N // 2
    return out
