"""Compiled CPU loops (numba) for the rain engine's memory-bound steps.

In torch, stamping needs one materialized index and one value per (stamp, kernel entry) pair
before `scatter_add_`, mirror images of border seeds need a dozen small ops, and normalization,
input check and composite are each a pass over the image. These loops do the same float32
arithmetic without the intermediate arrays, one sample at a time in a scratch canvas that stays in
cache. The CUDA path keeps the torch versions (stamping.py, render.py); tests/data/test_rain.py checks both agree.

Compiled on first use and cached on disk beside this file (`cache=True`: a few seconds once);
`nogil=True` lets a prefetch thread make rain while the main thread trains.

Same bits on every CPU, although numba compiles for the host's: never `fastmath` (LLVM then
keeps each float32 multiply and add apart, no FMA contraction, no reordered sums, whatever the
vector width) and no math functions; each canvas pixel is summed in seed order.
tests/data/test_determinism.py compiles them for a generic CPU and compares.
"""

from __future__ import annotations

import numba
import numpy as np

# render._normalize's offset: keeps float32 round-off (254.99998) from flooring a whole level down.
_NORMALIZE_OFFSET = np.float32(1e-3)


@numba.njit(cache=True, nogil=True)
def _reflect101_images(index, size, reach, out):  # pragma: no cover - compiled
    """Fill out[:count] with every p in [-reach, size + reach) that reflect-101 padding of a
    length-`size` axis fills from `index` (index itself included); return count."""
    if size == 1:
        count = 0
        for p in range(-reach, 1 + reach):
            out[count] = p
            count += 1
        return count
    if reach < index < size - 1 - reach:  # the usual case: mirror images -index and 2·(size-1) - index out of reach
        out[0] = index
        return 1
    period = 2 * (size - 1)
    count = 0
    first = (-reach - size) // period - 1
    last = (size + reach + size) // period + 1
    for m in range(first, last + 1):
        for p in (index + m * period, -index + m * period):
            if -reach <= p < size + reach:
                duplicate = False
                for j in range(count):  # index 0 and size-1 are their own mirrors
                    duplicate = duplicate or out[j] == p
                if not duplicate:
                    out[count] = p
                    count += 1
    return count


@numba.njit(cache=True, nogil=True)
def render(first_seed, row, col, value, first_entry, dy, dx, weight, reach_y, reach_x, layers):  # pragma: no cover - compiled
    """Normalized rain layers from seeds and sparse kernels, as rain's torch path computes them:
    stamps at each seed and its reflect-101 mirror images, then OpenCV's min-max normalization to
    0..255 and truncation.

    first_seed: int64 (N + 1,): sample k's seeds are row/col/value[first_seed[k]:first_seed[k+1]]
        (row, col int64 inside the image; value float32).
    first_entry: int64 (N + 1,): sample k's kernel is dy/dx/weight[first_entry[k]:first_entry[k+1]]
        (int64 offsets from the seed, float32 weights); reach_y/reach_x: int64 (N,) max |dy|, |dx|.
    layers: float32 (N, H, W) output, integers in [0, 255].
    """
    n, height, width = layers.shape
    margin_y, margin_x = int(reach_y.max()), int(reach_x.max())  # mirrored seeds lie up to reach outside
    rows, cols = height + 4 * margin_y, width + 4 * margin_x  # ... and stamp up to reach further out
    canvas = np.empty(rows * cols, dtype=np.float32)
    row_images = np.empty(height + 2 * margin_y + 1, dtype=np.int64)
    col_images = np.empty(width + 2 * margin_x + 1, dtype=np.int64)
    for k in range(n):
        canvas[:] = 0.0
        start, stop = first_entry[k], first_entry[k + 1]
        offset = dy[start:stop] * cols + dx[start:stop]
        kernel = weight[start:stop]
        for s in range(first_seed[k], first_seed[k + 1]):
            v = value[s]
            n_rows = _reflect101_images(row[s], height, reach_y[k], row_images)
            n_cols = _reflect101_images(col[s], width, reach_x[k], col_images)
            for i in range(n_rows):
                for j in range(n_cols):
                    centre = (row_images[i] + 2 * margin_y) * cols + col_images[j] + 2 * margin_x
                    for e in range(offset.shape[0]):
                        canvas[centre + offset[e]] += v * kernel[e]
        low, high = np.float32(np.inf), np.float32(-np.inf)
        for y in range(height):
            base = (y + 2 * margin_y) * cols + 2 * margin_x
            for x in range(width):
                low, high = min(low, canvas[base + x]), max(high, canvas[base + x])
        span = high - low
        scale = np.float32(255.0) / span if span > np.float32(1e-12) else np.float32(0.0)
        for y in range(height):
            base = (y + 2 * margin_y) * cols + 2 * margin_x
            for x in range(width):
                layers[k, y, x] = np.floor((canvas[base + x] - low) * scale + _NORMALIZE_OFFSET)


@numba.njit(cache=True, nogil=True)
def composite(clean, layers, weight, rainy):  # pragma: no cover - compiled
    """rainy = clip(clean + weight · R, 0, 1) per sample, and a check that clean lies in [0, 1].

    clean: float32 (N, C, H, W), contiguous; layers: float32 (N, H, W); weight: float32 (N,);
    rainy: float32 (N, C, H, W) output. Returns how many clean values lie outside [0, 1] (NaN
    included): the caller refuses the batch when it is not 0.
    """
    n, channels, height, width = clean.shape
    bad = 0
    for k in range(n):
        w = weight[k]
        for c in range(channels):
            for y in range(height):
                for x in range(width):
                    v = clean[k, c, y, x]
                    bad += not (v >= np.float32(0.0) and v <= np.float32(1.0))
                    rainy[k, c, y, x] = min(max(v + layers[k, y, x] * w, np.float32(0.0)), np.float32(1.0))
    return bad
