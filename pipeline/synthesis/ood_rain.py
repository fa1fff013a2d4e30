"""Out-of-distribution rain: evaluation suites whose rain differs from the training recipe in KIND.

The training recipe (shared/design/method.md) adds straight, Gaussian-thickened streaks with a
saturating add. The generators here change both the compositing and the rain's shape:

- `screen_streaks`: the Photoshop recipe behind Rain100L/H (noise -> threshold -> motion blur ->
  levels), composited with a SCREEN blend, which brightens without ever clipping like the add;
- `wind_streaks`: curved, width-varying streaks alpha-blended toward a grey-blue rain colour;
- `drops`: lens droplets that refract (flip, shrink, blur) the scene behind them, with a dark rim.

Contract (all three): `gen(clean, rng, **params) -> (rainy, layer, drawn)` with
  clean  uint8 HxWx3 RGB in [0, 255], H, W >= 16, never modified;
  rainy  uint8 HxWx3;
  layer  uint8 HxW in 0..255, the rain's own intensity (the evaluation mask: > 50 is "rain"); it
         is exactly 0 wherever the rainy image equals the clean one;
  drawn  dict of plain python floats/ints/str, "preset" = the generator's name.
Every random number comes from `rng`, in a fixed order, so a seed gives byte-identical output.
A keyword in `params` fixes that parameter (it is still drawn, so the later draws do not shift);
an unknown keyword raises TypeError.

Byte-identical across machines of one kind (x86-64 with AVX2 + FMA, with or without AVX-512): on
arrays only + - * / sqrt, rounding and single-threaded scipy.ndimage loops run, which IEEE
arithmetic makes exact on every SIMD width. Transcendentals (cos, sin, exp, pow) go through
`_elementwise`, Python's math, because numpy picks their SIMD implementation at run time (Intel
SVML for float64 on AVX-512 CPUs, its own AVX2 code for float32) and those differ from glibc in the
last bit, which a rounding step can turn into a level of a pixel; no FFTs, no threaded reductions.
tests/data/test_determinism.py checks it against other dispatch paths.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import ndimage, special

RAIN_COLOUR = (220.0, 225.0, 235.0)  # light grey-blue of wind-blown streaks, 0..255 RGB
MIN_SIZE = 16  # px, smallest accepted image edge


def _check_image(clean: object) -> tuple[int, int]:
    """(H, W) of a valid uint8 HxWx3 image with H, W >= MIN_SIZE; TypeError/ValueError otherwise."""
    if not isinstance(clean, np.ndarray):
        raise TypeError(f"clean must be a numpy array, got {type(clean).__name__}")
    if clean.dtype != np.uint8:
        raise TypeError(f"clean must be uint8 in [0, 255], got dtype {clean.dtype}")
    if clean.ndim != 3 or clean.shape[2] != 3:
        raise ValueError(f"clean must be an HxWx3 RGB image, got shape {clean.shape}")
    height, width = clean.shape[:2]
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(f"clean must be at least {MIN_SIZE}x{MIN_SIZE} px, got {height}x{width}")
    return height, width


class _Params:
    """Draws each named parameter from `rng`, unless the caller fixed it; records what was used."""

    def __init__(self, preset: str, rng: np.random.Generator, fixed: dict):
        self.rng, self.fixed, self.drawn = rng, dict(fixed), {"preset": preset}

    def uniform(self, name: str, low: float, high: float) -> float:
        value = float(self.rng.uniform(low, high))  # always drawn: fixing one keeps the rest
        self.drawn[name] = float(self.fixed.pop(name, value))
        return self.drawn[name]

    def integer(self, name: str, low: int, high: int) -> int:
        value = int(self.rng.integers(low, high + 1))  # inclusive range
        self.drawn[name] = int(self.fixed.pop(name, value))
        return self.drawn[name]

    def done(self) -> None:
        if self.fixed:
            raise TypeError(f"{self.drawn['preset']}: unknown parameter(s) {sorted(self.fixed)}")


def _soft_edge(inside_px: np.ndarray, softness: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage 0..1 from the signed distance (px) inside a shape's border.

    0.5 on the border, ramping linearly over `softness` px: with softness 1 this is the area
    a 1-px pixel shares with the shape, the usual box-filter anti-aliasing of a stamp.
    """
    return np.clip(inside_px / softness + 0.5, 0.0, 1.0)


def _elementwise(func: Callable[[float], float], values: np.ndarray) -> np.ndarray:
    """func (built from Python's math) on every element of a float64 array, same shape.

    Why not numpy's ufunc: see the module docstring. math calls glibc's scalar routines, one
    code path on every x86-64 with AVX2 + FMA. Repeated values (the sample positions t of
    streaks of equal length) are computed once."""
    flat = np.asarray(values, dtype=np.float64).ravel()
    unique, inverse = np.unique(flat, return_inverse=True)
    return np.fromiter(map(func, unique.tolist()), np.float64, len(unique))[inverse].reshape(np.shape(values))


def _distance(dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """sqrt(dy² + dx²): + * and a correctly rounded sqrt, the same bits on every CPU (np.hypot
    calls the C library's hypot)."""
    return np.sqrt(dy * dy + dx * dx)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter of float64 HxWxC over H and W (mode 'reflect', truncated at
    4 sigma), with its weights from math.exp and math.fsum: gaussian_filter builds them with
    numpy's exp, whose SIMD variant follows the CPU."""
    radius = int(4.0 * sigma + 0.5)
    values = [math.exp(-0.5 / (sigma * sigma) * (x * x)) for x in range(-radius, radius + 1)]
    total = math.fsum(values)
    weights = np.array([value / total for value in values])
    blurred = ndimage.correlate1d(image, weights, axis=0, mode="reflect")
    return ndimage.correlate1d(blurred, weights, axis=1, mode="reflect")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _line_kernel(length: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Motion-blur kernel of a `length`-px segment, as (dy, dx, weight) of its nonzero taps.

    Angle 0 is vertical, positive turns counter-clockwise (the repo's convention). The segment is
    sampled every 1/4 px and each sample bilinearly split over 4 taps (anti-aliased), then the
    weights are normalized to sum 1: a box average along the line, like Photoshop's motion blur.
    """
    theta = math.radians(angle_deg)
    t = np.linspace(-length / 2, length / 2, 4 * length + 1)
    ys, xs = t * math.cos(theta), t * math.sin(theta)
    y0, x0 = np.floor(ys), np.floor(xs)
    fy, fx = ys - y0, xs - x0
    radius = length // 2 + 2
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1))
    for oy, ox, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        np.add.at(kernel, ((y0 + oy).astype(int) + radius, (x0 + ox).astype(int) + radius), wgt)
    kernel /= kernel.sum()
    dy, dx = np.nonzero(kernel > 1e-6)
    return dy - radius, dx - radius, kernel[dy, dx]


def screen_streaks(clean: np.ndarray, rng: np.random.Generator, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rain100L/H-style streaks screened onto `clean`; returns (rainy, layer = S, drawn).

    Draws: amount U[0.002, 0.006] (fraction of noise pixels kept as dots), length int [15, 40] px,
    angle U[-25, 25] deg, white_point U[0.5, 0.9] and black_point U[0.1, 0.3] (levels, as
    fractions of a full-weight streak's core value).
    """
    height, width = _check_image(clean)
    p = _Params("screen_streaks", rng, params)
    amount = p.uniform("amount", 0.002, 0.006)
    length = p.integer("length", 15, 40)
    angle = p.uniform("angle", -25.0, 25.0)
    white = p.uniform("white_point", 0.5, 0.9)
    black = p.uniform("black_point", 0.1, 0.3)
    p.done()
    dy, dx, weight = _line_kernel(length, angle)
    pad = int(np.abs(dy).max()) + 1  # noise also off-image, so streaks enter across the borders
    canvas = (height + 2 * pad, width + 2 * pad)
    noise = rng.standard_normal(canvas)
    threshold = special.ndtri(1.0 - amount)  # Gaussian quantile: `amount` of the noise survives
    ys, xs = np.nonzero(noise > threshold)
    # Dot brightness 0.4..1 from how far the noise overshot the threshold: streaks of varied strength.
    dots = np.minimum(1.0, 0.4 + noise[ys, xs] - threshold)
    # Motion blur of the sparse dots = sum of kernel stamps (bincount adds in a fixed order).
    ty = np.clip((ys[:, None] + dy).ravel(), 0, canvas[0] - 1)
    tx = np.clip((xs[:, None] + dx).ravel(), 0, canvas[1] - 1)
    blurred = np.bincount(ty * canvas[1] + tx, (dots[:, None] * weight).ravel(), canvas[0] * canvas[1])
    blurred = blurred.reshape(canvas)[pad:-pad, pad:-pad]
    core = weight.max()  # a full-weight streak's brightest taps
    # Levels: black point cuts the faint anti-aliasing tails to exactly 0, white point saturates cores.
    stretch = np.clip((blurred - black * core) / ((white - black) * core), 0.0, 1.0)
    layer = _to_uint8(255.0 * stretch)
    s = layer.astype(np.float64)[:, :, None]
    rainy = _to_uint8(255.0 - (255.0 - clean) * (255.0 - s) / 255.0)  # screen: only ever brightens
    return rainy, layer, p.drawn


def wind_streaks(clean: np.ndarray, rng: np.random.Generator, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """Curved, tapering streaks alpha-blended toward RAIN_COLOUR; returns (rainy, layer, drawn).

    Draws: density U[0.0006, 0.0024] streaks per pixel (40..160 per 256²), wind_angle U[-40, 40]
    deg (mean direction, 0 = vertical), bend U[0.1, 0.35] (sideways sag at the tip, fraction of
    the length), max_width U[2, 4] px, opacity U[0.6, 0.9]; per streak: length U[20, 60] px,
    direction jitter N(0, 6 deg), bend x U[0.5, 1.5], peak width 1 + (max_width-1)·U[0.3, 1],
    brightness U[0.5, 1].
    """
    height, width = _check_image(clean)
    p = _Params("wind_streaks", rng, params)
    density = p.uniform("density", 0.0006, 0.0024)
    wind = p.uniform("wind_angle", -40.0, 40.0)
    bend = p.uniform("bend", 0.1, 0.35)
    max_width = p.uniform("max_width", 2.0, 4.0)
    opacity = p.uniform("opacity", 0.6, 0.9)
    p.done()
    n = max(1, int(round(density * height * width)))
    mid_y, mid_x = rng.uniform(0, height, n), rng.uniform(0, width, n)
    theta = np.radians(wind + rng.normal(0.0, 6.0, n))
    length = rng.uniform(20.0, 60.0, n)
    sag = bend * length * rng.uniform(0.5, 1.5, n) * math.copysign(1.0, wind)  # bends downwind
    peak = 1.0 + (max_width - 1.0) * rng.uniform(0.3, 1.0, n)
    bright = rng.uniform(0.5, 1.0, n)
    # Sample every streak every 1/2 px along t in [0, 1] (all streaks at once, ragged -> flat).
    counts = np.ceil(2 * length).astype(int) + 1
    owner = np.repeat(np.arange(n), counts)
    t = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)) / (counts[owner] - 1)
    # Parabolic path: straight along the wind, sagging sideways ~ t² (a drop pushed by the wind).
    along, side = (t - 0.5) * length[owner], (t * t - 1 / 3) * sag[owner]
    cos, sin = _elementwise(math.cos, theta)[owner], _elementwise(math.sin, theta)[owner]
    cy, cx = mid_y[owner] + along * cos - side * sin, mid_x[owner] + along * sin + side * cos
    taper = _elementwise(lambda x: math.sin(math.pi * x) ** 0.7, t)  # thick in the middle, 1 px at the tips
    radius = 0.5 * (1.0 + (peak[owner] - 1.0) * taper)
    value = bright[owner] * (0.6 + 0.4 * taper)  # tips fade too
    # Anti-aliased disc stamps on a fixed footprint around each sample, merged with max.
    reach = int(math.ceil(max_width / 2 + 1))
    off = np.arange(-reach, reach + 1)
    iy = np.rint(cy)[:, None, None] + off[None, :, None]
    ix = np.rint(cx)[:, None, None] + off[None, None, :]
    dist = _distance(iy - cy[:, None, None], ix - cx[:, None, None])
    cover = _soft_edge(radius[:, None, None] - dist) * value[:, None, None]
    keep = (cover > 0) & (iy >= 0) & (iy < height) & (ix >= 0) & (ix < width)
    flat = np.zeros(height * width)
    np.maximum.at(flat, (iy * width + ix)[keep].astype(np.int64), cover[keep])
    layer = _to_uint8(255.0 * flat.reshape(height, width))
    alpha = opacity * layer.astype(np.float64)[:, :, None] / 255.0  # from the quantized layer
    rainy = _to_uint8(clean * (1.0 - alpha) + np.asarray(RAIN_COLOUR) * alpha)
    p.drawn["count"] = n
    return rainy, layer, p.drawn


def drops(clean: np.ndarray, rng: np.random.Generator, **params) -> tuple[np.ndarray, np.ndarray, dict]:
    """Refracting lens droplets; returns (rainy, layer = drop alpha, drawn).

    Draws: drops_per_256 U[40, 120] (count per 256² of area), magnification U[1.5, 3] (a drop
    shows an m-times larger, inverted neighbourhood), blur_sigma U[0.8, 2] px, brighten U[0.05,
    0.2] (lift toward white), rim_strength U[0.2, 0.45], edge_px U[0.8, 1.8]; per drop: centre
    uniform, radius log-uniform [2, 10] px, aspect U[0.75, 1], orientation U[0, pi).
    """
    height, width = _check_image(clean)
    p = _Params("drops", rng, params)
    per_256 = p.uniform("drops_per_256", 40.0, 120.0)
    magnify = p.uniform("magnification", 1.5, 3.0)
    blur = p.uniform("blur_sigma", 0.8, 2.0)
    lift = p.uniform("brighten", 0.05, 0.2)
    rim = p.uniform("rim_strength", 0.2, 0.45)
    edge = p.uniform("edge_px", 0.8, 1.8)
    p.done()
    n = max(1, int(round(per_256 * height * width / 65536)))
    cys, cxs = rng.uniform(0, height, n), rng.uniform(0, width, n)
    radii = _elementwise(math.exp, rng.uniform(math.log(2.0), math.log(10.0), n))  # many small, few big
    aspects, phis = rng.uniform(0.75, 1.0, n), rng.uniform(0.0, np.pi, n)
    alpha, shade = np.zeros((height, width)), np.ones((height, width))
    src_y, src_x = np.zeros((height, width)), np.zeros((height, width))
    for cy, cx, r, aspect, phi in zip(cys, cxs, radii, aspects, phis):
        reach = int(math.ceil(r + edge)) + 1
        y0, y1 = max(0, int(cy) - reach), min(height, int(cy) + reach + 1)
        x0, x1 = max(0, int(cx) - reach), min(width, int(cx) + reach + 1)
        dy, dx = np.meshgrid(np.arange(y0, y1) - cy, np.arange(x0, x1) - cx, indexing="ij")
        u = (dx * math.cos(phi) + dy * math.sin(phi)) / r
        v = (-dx * math.sin(phi) + dy * math.cos(phi)) / (r * aspect)
        inside_px = (1.0 - _distance(u, v)) * r * (1 + aspect) / 2  # ~px from the drop's border
        a = _soft_edge(inside_px, edge)
        wins = a > alpha[y0:y1, x0:x1]  # overlapping drops: the more opaque one is seen
        rim_width = max(0.7, 0.2 * r)
        alpha[y0:y1, x0:x1][wins] = a[wins]
        shade[y0:y1, x0:x1][wins] = 1.0 - rim * _elementwise(lambda z: math.exp(-z * z), inside_px[wins] / rim_width)
        # A droplet is a tiny lens: it shows the scene around it, inverted and shrunk into it.
        src_y[y0:y1, x0:x1][wins] = (cy - magnify * dy)[wins]
        src_x[y0:y1, x0:x1][wins] = (cx - magnify * dx)[wins]
    layer = _to_uint8(255.0 * alpha)
    inside = layer > 0
    a = layer[inside].astype(np.float64)[:, None] / 255.0  # from the quantized layer
    coords = np.stack([src_y[inside], src_x[inside]])
    blurred = _gaussian_blur(clean.astype(np.float64), blur)
    seen = np.stack([ndimage.map_coordinates(blurred[:, :, c], coords, order=1, mode="nearest") for c in range(3)], 1)
    drop_rgb = (255.0 - (255.0 - seen) * (1.0 - lift)) * shade[inside][:, None]
    rainy = clean.copy()
    rainy[inside] = _to_uint8(clean[inside] * (1.0 - a) + drop_rgb * a)
    p.drawn["count"] = n
    return rainy, layer, p.drawn


GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, dict]]] = {
    "screen_streaks": screen_streaks,
    "wind_streaks": wind_streaks,
    "drops": drops,
}
