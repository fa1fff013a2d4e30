"""Rain synthesis engine: the authors' recipe (docs: shared/design/method.md), batched in torch.

Per image, every parameter drawn from an explicit generator:
  1. seeds: U(0,256) per pixel, kept where >= 256·(1 - amount), smoothed by a 3×3 kernel;
  2. streak kernel: a length×length line rotated to `angle` (0 = vertical, counter-clockwise
     positive; OpenCV's bilinear warp of a diagonal), thickened by a Gaussian of odd size `width`;
  3. R = seeds ⊛ kernel (reflect-101 borders), min-max normalized to 0..255 and floored;
  4. rainy = clip(clean + beta·R, 0, 255).

How it is computed, exact to ±1 level of the authors' OpenCV code:
- Each sample's kernel is built in closed form, reproducing OpenCV's arithmetic, with the 3×3
  smoothing folded in (`streak_kernels`), then kept as a list of (row, column, weight) entries,
  cached per (length, angle, width). Entries below 1/500 of the kernel's peak are dropped: each
  adds well under one level of R.
- Seeds are sparse (0.2–1 % of the pixels at the presets), so they are drawn directly as the
  survivors of the threshold: raster-order gaps between survivors are geometric and survivor
  values uniform above the threshold, the same distribution as a thresholded dense U(0,256) field.
  Every draw is a torch op on the generator's device, so CPU and CUDA get the same rain.
- R is then the sum of value-weighted kernel stamps, one per seed and one per reflect-101 mirror
  image of a seed near a border: a scatter-add of 2–3 values per pixel, far cheaper than FFTs of
  the image. On CUDA that is torch's scatter_add_; on CPU a compiled loop (cpu_kernels.py) that
  also normalizes, and composites while it checks the input range. Dense seed fields (high custom
  amounts) and huge kernels take an FFT convolution instead, in row bands for large images, so a
  4096² image holds only a few copies of itself.
benchmarks/bench_rain.py compares it with a per-image OpenCV reference.

torch is imported inside functions: this module is importable without paying for it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from pipeline.params.rain import RainConfig
from pipeline.synthesis.presets import PRESET_CONFIGS, PRESETS

if TYPE_CHECKING:
    import torch

RainSpec = Union[str, RainConfig]

# OpenCV's Gaussian weights for sizes <= 9 when sigma is derived from the size (sigma=0): a fixed
# table, not the formula. Larger sizes use sigma = 0.3·((size - 1)/2 - 1) + 0.8.
_OPENCV_SMALL_GAUSSIANS = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
    9: [0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875, 0.05078125, 0.015625],
}
_SEED_SMOOTHING = [[0.0, 0.1, 0.0], [0.1, 8.0, 0.1], [0.0, 0.1, 0.0]]
# Pixels per FFT band (≈2 M): bounds the working memory for large images; 512² fits in one band.
_BAND_PIXELS = 1 << 21
# Kernel entries below this fraction of the kernel's peak are dropped from the stamps: even summed
# over overlapping streaks they move R by less than one level (benchmarks/bench_rain.py checks it),
# and they are a quarter of the entries.
_NEGLIGIBLE_WEIGHT = 2e-3
# Sparse kernels kept for reuse, keyed by (length, angle, width): 3 KB each at the presets.
_KERNEL_CACHE_SIZE = 4096
_KERNEL_CACHE: "OrderedDict[tuple[int, int, int], _SparseKernel]" = OrderedDict()
# Above this share of surviving seeds a dense noise field is cheaper to hold than a list of seeds.
_SPARSE_SEED_LIMIT = 0.05
# Stamping costs about 1/16 of an FFT-convolved padded pixel per (seed, kernel entry) pair on CPU:
# stamp while the pairs number at most this many times the padded pixels.
_PAIRS_PER_FFT_PIXEL = 16
# (seed, kernel entry) pairs per scatter: large enough to amortize the call, small enough to stay
# in cache.
_PAIR_CHUNK = 1 << 16
_METHODS = ("auto", "sparse", "fft")


# ----------------------------------------------------------------------------- rain entries
def resolve_rain(rain: Sequence[RainSpec]) -> list[RainConfig]:
    """Preset names and custom configs (RainConfig or a mapping) -> a list of RainConfig."""
    if isinstance(rain, (str, RainConfig)) or not isinstance(rain, Sequence) or len(rain) == 0:
        raise ValueError(
            f"rain must be a non-empty list of preset names {list(PRESETS)} or custom configs, got {rain!r}"
        )
    resolved = []
    for entry in rain:
        if isinstance(entry, str):
            if entry not in PRESET_CONFIGS:
                raise ValueError(f"unknown rain preset {entry!r}; allowed: {', '.join(PRESETS)} or a custom config")
            resolved.append(PRESET_CONFIGS[entry])
        elif isinstance(entry, RainConfig):
            resolved.append(entry)
        elif isinstance(entry, dict):
            resolved.append(RainConfig.model_validate(entry))
        else:
            raise ValueError(f"rain entry must be a preset name or a custom config, got {entry!r}")
    return resolved


@dataclass(frozen=True)
class RainDraw:
    """Per-sample parameters (tensors of shape (N,) on the compute device)."""

    entry: "torch.Tensor"  # long, index into the resolved entries
    amount: "torch.Tensor"  # float64 in [0, 1]
    width: "torch.Tensor"  # long, odd
    length: "torch.Tensor"  # long
    angle: "torch.Tensor"  # long, degrees
    beta: "torch.Tensor"  # float64
    haze: "torch.Tensor"  # float64 veiling strength, 0 where the entry has no haze extra
    airlight: "torch.Tensor"  # float64 grey level of the veil in [0, 1]

    def row(self, i: int, entries: Sequence[RainConfig]) -> dict:
        """Sample i as plain Python values (what a manifest records)."""
        params = {
            "preset": entries[int(self.entry[i])].name,
            "amount": float(self.amount[i]),
            "width": int(self.width[i]),
            "length": int(self.length[i]),
            "angle": int(self.angle[i]),
            "beta": float(self.beta[i]),
        }
        if entries[int(self.entry[i])].extras:
            params.update(haze=float(self.haze[i]), airlight=float(self.airlight[i]))
        return params


def _draw_widths(u: np.ndarray, entry: np.ndarray, entries: Sequence[RainConfig]) -> np.ndarray:
    size = max(len(e.width) for e in entries)
    values, edges = [], []
    for e in entries:
        probs = e.width_probs or [1.0 / len(e.width)] * len(e.width)
        values.append(e.width + [1] * (size - len(e.width)))
        inner = np.cumsum(probs)[:-1].tolist()  # cumulative probabilities; 2.0 is never reached
        edges.append(inner + [2.0] * (size - len(inner)))
    # The first choice whose cumulative probability exceeds u (the last one absorbs rounding).
    choice = (u[:, None] >= np.array(edges)[entry]).sum(1)
    return np.array(values, dtype=np.int64)[entry, choice]


def _draw_angles(u: np.ndarray, entry: np.ndarray, entries: Sequence[RainConfig]) -> np.ndarray:
    """Integer angles uniform over the union of each entry's (disjoint) ranges."""
    size = max(len(e.angle) for e in entries)
    padding = [[0] * (size - len(e.angle)) for e in entries]
    lows = np.array([[lo for lo, _ in e.angle] + pad for e, pad in zip(entries, padding)], dtype=np.float64)[entry]
    counts = np.array([[hi - lo + 1 for lo, hi in e.angle] + pad for e, pad in zip(entries, padding)], dtype=np.float64)[entry]
    ends = counts.cumsum(1)
    pick = np.minimum(np.floor(u * ends[:, -1]), ends[:, -1] - 1)  # index into the union
    which = (pick[:, None] >= ends).sum(1)
    rows = np.arange(len(u))
    return (lows[rows, which] + pick - (ends - counts)[rows, which]).astype(np.int64)


def draw_rain_params(
    entries: Sequence[RainConfig], n: int, generator: "torch.Generator", device: "torch.device | str"
) -> RainDraw:
    """Draw one entry and all its parameters for each of `n` samples (one rand call, 8 columns)."""
    import torch

    u = torch.rand((n, 8), generator=generator, device=generator.device, dtype=torch.float64).cpu().numpy()
    # The per-sample arithmetic is a few dozen operations on n numbers: numpy does each for a
    # fraction of a torch call's fixed cost (float64 either way, so the values are the same).
    entry = np.minimum(np.floor(u[:, 0] * len(entries)), len(entries) - 1).astype(np.int64)
    hazes = [e.extras[0] if e.extras else None for e in entries]
    # Per entry: (low, high) of amount, beta, haze strength, airlight and length, then "has haze".
    bounds = np.array(
        [
            [
                *e.amount, *e.beta, *(h.strength if h else (0.0, 0.0)), *(h.airlight if h else (1.0, 1.0)),
                *e.length, float(h is not None),
            ]
            for e, h in zip(entries, hazes)
        ],
        dtype=np.float64,
    )[entry]
    low, high = bounds[:, 0:10:2], bounds[:, 1:10:2]
    # Columns of u: 1 amount, 2 width, 3 length, 4 angle, 5 beta, 6 haze, 7 airlight.
    amount, beta, haze, airlight = (low[:, :4] + u[:, [1, 5, 6, 7]] * (high[:, :4] - low[:, :4])).T
    length = np.minimum(low[:, 4] + np.floor(u[:, 3] * (high[:, 4] - low[:, 4] + 1)), high[:, 4]).astype(np.int64)

    def tensor(values: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(values)).to(device)

    return RainDraw(
        entry=tensor(entry),
        amount=tensor(amount),
        width=tensor(_draw_widths(u[:, 2], entry, entries)),
        length=tensor(length),
        angle=tensor(_draw_angles(u[:, 4], entry, entries)),
        beta=tensor(beta),
        haze=tensor(bounds[:, 10] * haze),
        airlight=tensor(airlight),
    )


# ----------------------------------------------------------------------------- kernels
def _reflect101(index: "torch.Tensor", size: "torch.Tensor | int") -> "torch.Tensor":
    """Map any integer index into [0, size) the way OpenCV's BORDER_REFLECT_101 does (gfedcb|abcdefgh|gfedcba)."""
    import torch

    size = torch.as_tensor(size, device=index.device)
    period = (2 * (size - 1)).clamp(min=1)
    folded = torch.remainder(index, period)
    folded = torch.where(folded < size, folded, period - folded)
    return torch.where(size == 1, torch.zeros_like(folded), folded)


def _gaussian_taps(width: "torch.Tensor") -> "torch.Tensor":
    """(N,) odd sizes -> (N, max size) centred Gaussian weights, float32, zero-padded."""
    import torch

    taps = int(width.max())
    weights = torch.zeros(len(width), taps, dtype=torch.float32, device=width.device)
    for size in width.unique().tolist():
        if size in _OPENCV_SMALL_GAUSSIANS:
            row = torch.tensor(_OPENCV_SMALL_GAUSSIANS[size], dtype=torch.float64)
        else:
            sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
            x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
            row = torch.exp(-(x**2) / (2 * sigma**2))
            row /= row.sum()
        start = (taps - size) // 2
        weights[width == size, start : start + size] = row.float().to(width.device)
    return weights


def _opencv_warp_sources(angle, length, x, y):
    """Where OpenCV's warpAffine samples the source for destination pixels (x, y) (float64 grids),
    for cv2.getRotationMatrix2D((L/2, L/2), angle - 45, 1): (u0, fu, v0, fv), integer part and
    fraction of the source column u and row v. Mirrors its fixed-point arithmetic exactly (the
    inverse matrix scaled by 2**10, rounded, then cut to 1/32 px) so kernels match bit for bit."""
    import torch

    radians = (angle.double() - 45) * math.pi / 180
    cos, sin = torch.cos(radians)[:, None, None], torch.sin(radians)[:, None, None]
    centre = length.double()[:, None, None] / 2
    m02, m12 = (1 - cos) * centre - sin * centre, sin * centre + (1 - cos) * centre
    det = 1 / (cos * cos + sin * sin)
    a11, a12, a21, a22 = cos * det, -sin * det, sin * det, cos * det
    b1, b2 = -a11 * m02 - a12 * m12, -a21 * m02 - a22 * m12
    # Row and column terms are rounded separately, as OpenCV does (x: (N,1,C), y: (N,C,1)).
    fixed_u = (torch.round((a12 * y + b1) * 1024) + 16) + torch.round(a11 * x * 1024)
    fixed_v = (torch.round((a22 * y + b2) * 1024) + 16) + torch.round(a21 * x * 1024)
    fixed_u, fixed_v = torch.floor(fixed_u / 32), torch.floor(fixed_v / 32)  # units of 1/32 px
    u0, v0 = torch.floor(fixed_u / 32), torch.floor(fixed_v / 32)
    return u0, (fixed_u - 32 * u0) / 32, v0, (fixed_v - 32 * v0) / 32


def streak_kernels(length: "torch.Tensor", angle: "torch.Tensor", width: "torch.Tensor") -> tuple["torch.Tensor", int]:
    """Full per-sample filters for the FFT: 3×3 seed smoothing ∘ Gaussian-thickened rotated line.

    length, angle, width: (N,) integer tensors. Returns (kernels float32 (N, 2p+1, 2p+1), p), with
    p = max(length)//2 + 1. Each kernel is OpenCV's, built in closed form: warpAffine (bilinear, zero
    border) of an L×L identity matrix rotated by angle-45° about (L/2, L/2), GaussianBlur of size
    `width` with reflect-101 borders at the L×L box, then the 3×3 seed smoothing folded in. It is
    stored flipped and centred at (p, p), so FFT convolution reproduces filter2D's correlation with
    its anchor at (L//2, L//2).
    """
    import torch
    import torch.nn.functional as F

    device = length.device
    n = len(length)
    pad = int(length.max()) // 2 + 1
    size = 2 * pad + 1
    grid = torch.arange(size, device=device)
    # Canvas position q holds kernel index L//2 + pad - q (the flip); the L×L box spans [lo, hi].
    hi = (length // 2 + pad)[:, None]
    lo = hi - length[:, None] + 1
    index = (hi - grid[None, :]).double()  # (N, size) kernel coordinate of each canvas position
    u0, fu, v0, fv = _opencv_warp_sources(angle, length, index[:, None, :], index[:, :, None])
    side = length.double()[:, None, None]
    here, next_ = ((u0 >= 0) & (u0 < side)).float(), ((u0 >= -1) & (u0 + 1 < side)).float()
    # The 2×2 neighbourhood touches the diagonal (row == column) only where u0 - v0 is -1, 0 or 1.
    diagonal = u0 - v0
    line = torch.where(diagonal == 0, (1 - fu) * (1 - fv) * here + fu * fv * next_, 0.0)
    line += torch.where(diagonal == 1, (1 - fu) * fv * here, 0.0)
    line += torch.where(diagonal == -1, fu * (1 - fv) * next_, 0.0)
    in_box = (grid[None, :] >= lo) & (grid[None, :] <= hi)  # (N, size)
    box = in_box[:, :, None] & in_box[:, None, :]
    line = (line * box).float()

    # Gaussian thickness, OpenCV style: reflect-101 at the box edges, then a separable filter.
    taps = _gaussian_taps(width)
    radius = taps.shape[1] // 2
    padded_grid = torch.arange(-radius, size + radius, device=device)[None, :]
    source = lo + _reflect101(padded_grid - lo, length[:, None])  # (N, size + 2r), inside the box
    padded = line.gather(1, source[:, :, None].expand(n, -1, size))
    padded = padded.gather(2, source[:, None, :].expand(n, size + 2 * radius, -1))
    blurred = F.conv2d(padded[None], taps.view(n, 1, 1, -1), groups=n)
    blurred = F.conv2d(blurred, taps.view(n, 1, -1, 1), groups=n)[0] * box

    smoothing = torch.tensor(_SEED_SMOOTHING, dtype=torch.float32, device=device)[None, None]
    # The smoothing kernel is symmetric, so it commutes with the flip and with reflect-101 padding.
    return F.conv2d(blurred[:, None], smoothing, padding=1)[:, 0], pad


@dataclass(frozen=True)
class _SparseKernel:
    """One kernel as stamp entries, ordered by row: a seed at (y, x) adds value·weight[i] at
    (y + dy[i], x + dx[i]). dy, dx: int16 (M,); weight: float32 (M,); size: M; reach_y, reach_x:
    the largest |dy| and |dx|."""

    dy: "torch.Tensor"
    dx: "torch.Tensor"
    weight: "torch.Tensor"
    size: int
    reach_y: int
    reach_x: int


def _sparse_kernels(length: "torch.Tensor", angle: "torch.Tensor", width: "torch.Tensor") -> list[_SparseKernel]:
    """Per sample, `streak_kernels` in stamp form (CPU tensors), without its negligible entries.
    Kernels are cached by (length, angle, width): a preset has a few thousand of them."""
    import torch

    keys = list(zip(length.tolist(), angle.tolist(), width.tolist()))
    missing = sorted({key for key in keys if key not in _KERNEL_CACHE})
    if missing:
        built = torch.tensor(missing, dtype=torch.long)
        kernels, pad = streak_kernels(built[:, 0], built[:, 1], built[:, 2])
        magnitude = kernels.abs()
        keep = magnitude > _NEGLIGIBLE_WEIGHT * magnitude.amax(dim=(1, 2), keepdim=True)
        counts = keep.sum(dim=(1, 2)).tolist()
        which, row, col = keep.nonzero(as_tuple=True)
        # streak_kernels centres the convolution kernel at (pad, pad): entry (row, col) lands at
        # an offset (row - pad, col - pad) from the seed.
        parts = zip((row - pad).short().split(counts), (col - pad).short().split(counts), kernels[which, row, col].split(counts))
        for key, count, (dy, dx, weight) in zip(missing, counts, parts):
            reach_y, reach_x = (int(d.abs().max()) if count else 0 for d in (dy, dx))
            _KERNEL_CACHE[key] = _SparseKernel(dy, dx, weight, count, reach_y, reach_x)
    found = [_KERNEL_CACHE[key] for key in keys]
    for key in keys:  # least recently used first out
        _KERNEL_CACHE.move_to_end(key)
    while len(_KERNEL_CACHE) > _KERNEL_CACHE_SIZE:
        _KERNEL_CACHE.popitem(last=False)
    return found


# ----------------------------------------------------------------------------- seeds
@dataclass(frozen=True)
class _Seeds:
    """The surviving seeds of a batch, ordered by sample, then raster position: sample, row, col
    (long (S,)) and value (float32 (S,), in [256·(1 - amount), 256))."""

    sample: "torch.Tensor"
    row: "torch.Tensor"
    col: "torch.Tensor"
    value: "torch.Tensor"


def _seed_field(noise: "torch.Tensor", amount: "torch.Tensor") -> "torch.Tensor":
    """The recipe's seeds from uniform noise (float32 (N,1,H,W) in [0,1)): 256·noise where it is
    >= 256·(1 - amount), else 0. A new tensor; noise is not modified."""
    import torch

    seeds = noise * 256.0
    threshold = (256.0 * (1.0 - amount)).float().view(-1, 1, 1, 1).to(noise.device)
    return seeds.masked_fill_(seeds < threshold, 0.0)


def _sparse_seeds(field: "torch.Tensor") -> _Seeds:
    """The non-zero pixels of a seed field (N,1,H,W)."""
    sample, _, row, col = field.nonzero(as_tuple=True)
    return _Seeds(sample, row, col, field[sample, 0, row, col])


def _draw_seeds(amount: "torch.Tensor", height: int, width: int, generator: "torch.Generator") -> _Seeds:
    """Seeds drawn directly as survivors, on the generator's device: every pixel survives with
    probability `amount` (per sample, float64 (N,)), independently, with a value U[256·(1 - amount), 256).
    That is the distribution of the recipe's thresholded U(0,256) field; here the gaps between
    survivors in raster order are drawn (geometric: failures before a success), then the values."""
    import torch

    device = generator.device
    pixels = height * width
    survive = amount.to(device, torch.float64)
    n = survive.shape[0]
    log_fail = torch.log1p(-survive)[:, None]  # log(1 - amount) <= 0
    expected = pixels * float(survive.max())
    block = int(expected + 6 * math.sqrt(expected) + 16)  # runs short about once in a billion
    blocks, last = [], 0.0
    while True:
        # floor(log(u) / log(1 - p)) for u ~ U[0,1) is geometric: P(>= k) = (1 - p)^k, the
        # failures before the next survivor. Amount 0 divides by -0.0: +inf, clamped to a gap past
        # the image; amount 1 gives 0 (and nan for u = 0, also 0).
        gaps = torch.rand((n, block), generator=generator, device=device, dtype=torch.float64).log_()
        gaps = gaps.div_(log_fail).floor_().nan_to_num_(nan=0.0).clamp_(max=pixels)
        ends = gaps.add_(1).cumsum_(1).add_(last)  # 1-based raster positions of the survivors
        blocks.append(ends)
        last = ends[:, -1:]
        if bool((last >= pixels).all()):  # every sample's sequence has left the image
            break
    ends = torch.cat(blocks, 1) if len(blocks) > 1 else blocks[0]
    sample, index = (ends <= pixels).nonzero(as_tuple=True)
    flat = ends[sample, index].long().sub_(1)
    low, span = torch.stack([256.0 * (1.0 - survive), 256.0 * survive]).float().index_select(1, sample)
    value = torch.rand(flat.shape[0], generator=generator, device=device).mul_(span).add_(low)
    return _Seeds(sample, flat // width, flat % width, value)


def _to_device(seeds: _Seeds, device: "torch.device | str") -> _Seeds:
    """The same seeds on `device`."""
    return _Seeds(*(t.to(device) for t in (seeds.sample, seeds.row, seeds.col, seeds.value)))


# ----------------------------------------------------------------------------- stamping
@lru_cache(maxsize=64)
def _reflect101_copies(size: int, reach: int, device: str) -> "torch.Tensor":
    """(c, size) long: column k lists k itself, then the other coordinates in [-reach, size + reach)
    that reflect-101 padding fills from index k, padded with a coordinate far outside.
    Cached: treat the result as read-only."""
    import torch

    padded = torch.arange(-reach, size + reach, device=device)
    source = _reflect101(padded, size)
    mirror = padded != source
    padded, source = padded[mirror], source[mirror]
    order = torch.argsort(source, stable=True)
    counts = torch.bincount(source, minlength=size)
    rank = torch.arange(len(padded), device=device) - (counts.cumsum(0) - counts)[source[order]]
    table = torch.full((1 + int(counts.max()), size), -(1 << 40), dtype=torch.long, device=device)
    table[0] = torch.arange(size, device=device)
    table[1 + rank, source[order]] = padded[order]
    return table


def _stamp_positions(
    seeds: _Seeds, kernels: Sequence[_SparseKernel], height: int, width: int
) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """Every stamp whose kernel reaches the image: each seed, and each of its reflect-101 mirror
    images within its kernel's reach of the image (what convolving the padded seeds adds).
    Returns (sample, row, col, value), ordered by sample; rows and columns may lie outside the image."""
    import torch

    device = seeds.value.device
    reach = torch.tensor([[k.reach_y for k in kernels], [k.reach_x for k in kernels]], device=device)
    reach_y, reach_x = reach.index_select(1, seeds.sample)
    # Only seeds within their kernel's reach of a border have mirror images that matter (the
    # nearest ones lie at -row and 2·(height - 1) - row).
    border = (
        (seeds.row <= reach_y) | (seeds.row >= height - 1 - reach_y) | (seeds.col <= reach_x) | (seeds.col >= width - 1 - reach_x)
    ).nonzero().squeeze(1)
    if border.numel() == 0:
        return seeds.sample, seeds.row, seeds.col, seeds.value
    reach_y, reach_x = reach_y[border], reach_x[border]
    # Copies along the first dimension (the seed itself first), seeds along the last: the
    # elementwise loops then run along the long dimension.
    rows = _reflect101_copies(height, int(reach[0].max()), str(device)).index_select(1, seeds.row[border])
    cols = _reflect101_copies(width, int(reach[1].max()), str(device)).index_select(1, seeds.col[border])
    near = ((rows >= -reach_y) & (rows < height + reach_y))[:, None] & ((cols >= -reach_x) & (cols < width + reach_x))[None]
    near[0, 0] = False  # the seed itself is already a stamp
    i, j, which = near.nonzero(as_tuple=True)
    seed = border[which]
    sample = torch.cat([seeds.sample, seeds.sample[seed]])
    order = torch.sort(sample, stable=True).indices
    return (
        sample[order],
        torch.cat([seeds.row, rows[i, which]])[order],
        torch.cat([seeds.col, cols[j, which]])[order],
        torch.cat([seeds.value, seeds.value[seed]])[order],
    )


def _stamp(
    stamps: tuple["torch.Tensor", ...], kernels: Sequence[_SparseKernel], height: int, width: int
) -> "torch.Tensor":
    """Unnormalized R as the sum of value-weighted kernel stamps: float32 (N, H, W), a view into a
    padded canvas. Each (stamp, kernel entry) pair is one scatter-add, a sample at a time (in
    chunks of _PAIR_CHUNK pairs) so that its part of the canvas stays in cache."""
    import torch

    sample, row, col, value = stamps
    device = value.device
    n = len(kernels)
    margin_y, margin_x = 2 * max(k.reach_y for k in kernels), 2 * max(k.reach_x for k in kernels)
    canvas_rows, canvas_cols = height + 2 * margin_y, width + 2 * margin_x  # mirrored stamps included
    canvas = torch.zeros(n, canvas_rows * canvas_cols, dtype=torch.float32, device=device)
    # Flat canvas positions, in int32 where they fit: its arithmetic is several times faster than
    # int64's on CPU (scatter_add_ itself wants int64).
    fits = canvas_rows * canvas_cols < 2**31
    kind = torch.int32 if fits else torch.long
    position = ((row + margin_y) * canvas_cols + col + margin_x).to(kind)
    offsets = torch.cat([k.dy for k in kernels]).to(device, kind) * canvas_cols
    offsets += torch.cat([k.dx for k in kernels]).to(device, kind)
    sizes = [k.size for k in kernels]
    per_sample = torch.bincount(sample, minlength=n).tolist()
    parts = zip(
        canvas, per_sample, sizes, position[:, None].split(per_sample), value[:, None].split(per_sample),
        offsets.split(sizes), torch.cat([k.weight for k in kernels]).to(device).split(sizes),
    )
    for flat, count, size, position, value, offset, weight in parts:
        step = max(1, _PAIR_CHUNK // max(size, 1))
        for start in range(0, count if size else 0, step):
            at, by = (position, value) if count <= step else (position[start : start + step], value[start : start + step])
            index = torch.add(at, offset).view(-1)
            added = torch.mul(by, weight).view(-1)
            flat.scatter_add_(0, index.long() if fits else index, added)
    return canvas.view(n, canvas_rows, canvas_cols)[:, margin_y : margin_y + height, margin_x : margin_x + width]


def _render_on_cpu(
    seeds: _Seeds, per_sample: "torch.Tensor", kernels: Sequence[_SparseKernel], height: int, width: int
) -> "torch.Tensor":
    """What `_normalize(_stamp(_stamp_positions(...)))` computes, in one compiled loop
    (cpu_kernels.render): normalized R, float32 (N, H, W)."""
    import torch
    import torch.nn.functional as F

    from pipeline.synthesis import cpu_kernels

    def ranges(counts: "torch.Tensor") -> np.ndarray:
        return F.pad(counts.cumsum(0), (1, 0)).numpy()

    layers = torch.empty(len(kernels), height, width, dtype=torch.float32)
    cpu_kernels.render(
        ranges(per_sample), seeds.row.numpy(), seeds.col.numpy(), seeds.value.float().numpy(),
        ranges(torch.tensor([k.size for k in kernels])),
        torch.cat([k.dy for k in kernels]).long().numpy(), torch.cat([k.dx for k in kernels]).long().numpy(),
        torch.cat([k.weight for k in kernels]).numpy(),
        np.array([k.reach_y for k in kernels], dtype=np.int64), np.array([k.reach_x for k in kernels], dtype=np.int64),
        layers.numpy(),
    )
    return layers


# ----------------------------------------------------------------------------- FFT convolution
def _fft_size(n: int) -> int:
    """Smallest 2·3·5-smooth integer >= n (fast FFT lengths)."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


def _reflect_pad(seeds: "torch.Tensor", top: int, rows: int, pad: int) -> "torch.Tensor":
    """Rows [top - pad, top + rows + pad) and columns [-pad, W + pad) of the reflect-101 extension
    of seeds (N,1,H,W)."""
    import torch
    import torch.nn.functional as F

    height, width = seeds.shape[-2:]
    if top == 0 and rows == height and pad < min(height, width):
        return F.pad(seeds, (pad, pad, pad, pad), mode="reflect")  # torch's reflect is reflect-101
    row_index = _reflect101(torch.arange(top - pad, top + rows + pad, device=seeds.device), height)
    band = seeds.index_select(2, row_index)
    if pad < width:
        return F.pad(band, (pad, pad, 0, 0), mode="reflect")
    col_index = _reflect101(torch.arange(-pad, width + pad, device=seeds.device), width)
    return band.index_select(3, col_index)


def _fft_convolve(seeds: "torch.Tensor", draw: RainDraw, band_pixels: int) -> "torch.Tensor":
    """Unnormalized R by FFT convolution of a dense seed field (float32 (N,1,H,W)) with the full
    kernels, whatever their mix of sizes; images with more than `band_pixels` padded pixels go
    through in row bands (same result, bounded working memory). Returns float32 (N,1,H,W)."""
    import torch

    n, _, height, width = seeds.shape
    device = seeds.device
    kernels, pad = streak_kernels(draw.length.to(device), draw.angle.to(device), draw.width.to(device))
    band = height if height * (width + 2 * pad) <= band_pixels else max(1, band_pixels // (width + 2 * pad))
    fft_rows, fft_cols = _fft_size(band + 2 * pad), _fft_size(width + 2 * pad)
    kernel_spectrum = torch.fft.rfft2(kernels[:, None], s=(fft_rows, fft_cols))

    def convolve(top: int, rows: int) -> "torch.Tensor":
        spectrum = torch.fft.rfft2(_reflect_pad(seeds, top, rows, pad), s=(fft_rows, fft_cols))
        spectrum *= kernel_spectrum
        # Convolving with the kernel centred at `pad` delays the output by `pad`: valid from 2·pad.
        return torch.fft.irfft2(spectrum, s=(fft_rows, fft_cols))[:, :, 2 * pad : 2 * pad + rows, 2 * pad : 2 * pad + width]

    if band >= height:
        return convolve(0, height)
    layers = torch.empty_like(seeds)
    for top in range(0, height, band):
        rows = min(band, height - top)
        layers[:, :, top : top + rows] = convolve(top, rows)
    return layers


# ----------------------------------------------------------------------------- rendering
def _normalize(layers: "torch.Tensor") -> "torch.Tensor":
    """OpenCV's per-image min-max normalization to 0..255 followed by its truncation to uint8, on
    float32 (N, ..., H, W) (any view). Returns a new float32 tensor of the same shape."""
    import torch

    dims = tuple(range(1, layers.dim()))
    low, high = layers.amin(dim=dims, keepdim=True), layers.amax(dim=dims, keepdim=True)
    span = high - low
    # A flat layer (no seed at all) normalizes to zeros, as OpenCV's NORM_MINMAX does.
    scale = torch.where(span > 1e-12, 255.0 / span.clamp(min=1e-12), torch.zeros_like(span))
    # The small offset keeps float32 round-off (e.g. 254.99998 for the maximum) from flooring
    # a whole level down; OpenCV truncates its float64 result to uint8. The result lies in
    # [0.001, 255.001), so no clamp is needed.
    offset = torch.tensor(1e-3, device=layers.device)
    if bool((low == 0).all()):  # the usual case (some pixel without rain): one pass fewer
        return torch.addcmul(offset, layers, scale).floor_()
    shifted = torch.sub(layers, low)
    return torch.addcmul(offset, shifted, scale, out=shifted).floor_()


def _layers_from_seeds(
    seeds: _Seeds, draw: RainDraw, n: int, height: int, width: int, method: str, band_pixels: int
) -> "torch.Tensor":
    """Normalized R (float32 (N,1,H,W)) from a list of seeds on the compute device: stamped, or
    FFT-convolved when the kernels are so large or the seeds so many that stamping costs more."""
    import torch

    kernels = _sparse_kernels(draw.length, draw.angle, draw.width)
    per_sample = torch.bincount(seeds.sample, minlength=n)
    if method == "auto":  # mirror images of border seeds add a few stamps more: ignored here
        pairs = sum(count * k.size for count, k in zip(per_sample.tolist(), kernels))
        pad = max(max(k.reach_y, k.reach_x) for k in kernels)
        method = "sparse" if pairs <= _PAIRS_PER_FFT_PIXEL * n * (height + 2 * pad) * (width + 2 * pad) else "fft"
    if method == "sparse" and seeds.value.device.type == "cpu":
        return _render_on_cpu(seeds, per_sample, kernels, height, width)[:, None]
    if method == "sparse":
        stamps = _stamp_positions(seeds, kernels, height, width)
        return _normalize(_stamp(stamps, kernels, height, width))[:, None]
    field = torch.zeros(n, 1, height, width, dtype=torch.float32, device=seeds.value.device)
    field[seeds.sample, 0, seeds.row, seeds.col] = seeds.value
    return _normalize(_fft_convolve(field, draw, band_pixels))


def _draw_layers(
    draw: RainDraw, height: int, width: int, generator: "torch.Generator", device: "torch.device | str"
) -> "torch.Tensor":
    """Fresh rain layers for drawn parameters: normalized R, float32 (N,1,H,W) on `device`.
    Seeds come as a list when they are sparse (every preset), else as a dense noise field."""
    import torch

    n = draw.amount.shape[0]
    if float(draw.amount.max()) <= _SPARSE_SEED_LIMIT:
        seeds = _to_device(_draw_seeds(draw.amount, height, width, generator), device)
        return _layers_from_seeds(seeds, draw, n, height, width, "auto", _BAND_PIXELS)
    noise = torch.rand((n, 1, height, width), generator=generator, device=generator.device).to(device)
    return _normalize(_fft_convolve(_seed_field(noise, draw.amount), draw, _BAND_PIXELS))


def render_rain_layers(
    noise: "torch.Tensor", draw: RainDraw, band_pixels: int = _BAND_PIXELS, method: str = "auto"
) -> "torch.Tensor":
    """Rain layers R from given uniform noise (float32 (N,1,H,W) in [0,1), not modified), seeded
    as the recipe says. Returns float32 (N,1,H,W), integers in [0, 255] (OpenCV's min-max
    normalization followed by its truncation to uint8).

    method: "sparse" stamps the kernel at each seed, "fft" convolves the whole seed field (in row
    bands for images of more than `band_pixels` padded pixels), "auto" picks the cheaper one.
    Both agree to ±1 level (float32 round-off, and the negligible kernel entries stamping drops).
    """
    import torch

    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    n, _, height, width = noise.shape
    if n == 0:
        return torch.zeros_like(noise)
    field = _seed_field(noise, draw.amount)
    if method == "fft" or (method == "auto" and float(draw.amount.max()) > _SPARSE_SEED_LIMIT):
        return _normalize(_fft_convolve(field, draw, band_pixels))
    return _layers_from_seeds(_sparse_seeds(field), draw, n, height, width, method, band_pixels)


# ----------------------------------------------------------------------------- public API
def _check_float_batch(clean: "torch.Tensor", check_range: bool = True) -> None:
    import torch

    if not isinstance(clean, torch.Tensor):
        raise TypeError(f"clean must be a torch.Tensor (float32 NCHW in [0,1]), got {type(clean).__name__}")
    if clean.dim() != 4 or clean.shape[1] != 3:
        raise ValueError(f"clean must be NCHW with 3 channels (float32 in [0,1]), got shape {tuple(clean.shape)}")
    if not clean.is_floating_point():
        raise TypeError(f"clean must be float32 in [0,1], got dtype {clean.dtype}")
    if check_range and clean.numel():
        low, high = (float(v) for v in torch.aminmax(clean))
        if not (low >= 0 and high <= 1):  # NaN fails too
            raise ValueError(f"clean values must lie in [0,1], got [{low:g}, {high:g}]")


def _composite(clean: "torch.Tensor", layers: "torch.Tensor", weight: "torch.Tensor") -> "torch.Tensor":
    """rainy = clip(clean + weight·R, 0, 1) for clean float NCHW in [0,1], layers float32 (N,1,H,W)
    and weight float32 (N,): a new float32 tensor. Checks clean's range (on CPU in the same
    compiled pass, cpu_kernels.composite)."""
    import torch

    n = clean.shape[0]
    if clean.device.type != "cpu":
        _check_float_batch(clean)
        return torch.addcmul(clean.float(), layers, weight.view(n, 1, 1, 1)).clamp_(0, 1)
    from pipeline.synthesis import cpu_kernels

    clean32 = clean.float().contiguous()
    rainy = torch.empty_like(clean32)
    if cpu_kernels.composite(clean32.numpy(), layers.contiguous().view(n, *layers.shape[-2:]).numpy(), weight.numpy(), rainy.numpy()):
        _check_float_batch(clean)  # raises, naming the range found
    return rainy


def rainify_batch(
    clean: "torch.Tensor", rain: Sequence[RainSpec], probability: float, generator: "torch.Generator"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Training-time on-the-fly rain (a fresh pattern every call).

    clean: float32 NCHW in [0,1] (C=3, any H, W, CPU or CUDA); not modified.
    rain: preset names and/or RainConfig; one entry is drawn per sample, then each parameter.
    probability: chance that a sample gets rain; the others stay clean with an all-zero layer.
    generator: every random draw comes from it (on its own device; a CPU generator gives the same
        rain on CPU and CUDA inputs, up to float tolerance). In DataLoader workers seed it per
        worker and epoch, e.g. pipeline.seeds.torch_generator(seed, "train", "rain", epoch, worker).
    Returns (rainy float32 NCHW in [0,1], rain layer R float32 N1HW in [0,255]).
    """
    import torch

    from pipeline.synthesis.extras import add_haze

    _check_float_batch(clean, check_range=False)  # the range is checked with the composite
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    entries = resolve_rain(rain)
    n, _, height, width = clean.shape
    device = clean.device
    applied = torch.rand(n, generator=generator, device=generator.device).to(device) < probability
    index = applied.nonzero().squeeze(1)
    if len(index) == 0:
        _check_float_batch(clean)
        return clean.float().clone(), torch.zeros(n, 1, height, width, dtype=torch.float32, device=device)
    draw = draw_rain_params(entries, len(index), generator, device)
    layer = _draw_layers(draw, height, width, generator, device)
    weight = torch.zeros(n, dtype=torch.float32, device=device)
    weight[index] = draw.beta.float() / 255.0
    if len(index) == n:
        layers = layer
    else:
        layers = torch.zeros(n, 1, height, width, dtype=torch.float32, device=device)
        layers[index] = layer
    rainy = _composite(clean, layers, weight)
    if any(e.extras for e in entries) and bool((draw.haze > 0).any()):
        haze = torch.zeros(n, 1, 1, 1, dtype=torch.float32, device=device)
        airlight = torch.ones(n, 1, 1, 1, dtype=torch.float32, device=device)
        haze[index], airlight[index] = draw.haze.float().view(-1, 1, 1, 1), draw.airlight.float().view(-1, 1, 1, 1)
        rainy = add_haze(rainy, haze, airlight)
    return rainy, layers


def synthesize_rain(
    clean_uint8: np.ndarray, rain: Sequence[RainSpec], seed: int
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One image, deterministic from `seed` (suites use seed = base + index).

    clean_uint8: uint8 HxWx3 RGB in [0,255]; not modified.
    Returns (rainy uint8 HxWx3, rain layer R uint8 HxW in 0..255, drawn parameters dict with keys
    preset, amount, width, length, angle, beta, plus haze/airlight when the entry has that extra).
    Works in row bands, so memory stays at a few copies of the image even at 4096².
    """
    import torch

    from pipeline.synthesis.extras import add_haze

    if not isinstance(clean_uint8, np.ndarray):
        raise TypeError(f"clean_uint8 must be a numpy array (uint8 HxWx3), got {type(clean_uint8).__name__}")
    if clean_uint8.dtype != np.uint8:
        raise TypeError(f"clean_uint8 must be uint8 HxWx3 in [0,255], got dtype {clean_uint8.dtype}")
    if clean_uint8.ndim != 3 or clean_uint8.shape[2] != 3:
        raise ValueError(f"clean_uint8 must be HxWx3 (RGB), got shape {clean_uint8.shape}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2**64), got {seed!r}")
    entries = resolve_rain(rain)
    height, width, _ = clean_uint8.shape
    generator = torch.Generator().manual_seed(int(seed))
    draw = draw_rain_params(entries, 1, generator, "cpu")
    layer = _draw_layers(draw, height, width, generator, "cpu")[0, 0].numpy()
    beta, haze, airlight = float(draw.beta[0]), float(draw.haze[0]), float(draw.airlight[0])
    rainy = np.empty_like(clean_uint8)
    rows = max(1, _BAND_PIXELS // (3 * width))
    for top in range(0, height, rows):
        band = clean_uint8[top : top + rows].astype(np.float32)
        band += np.float32(beta) * layer[top : top + rows, :, None]
        np.clip(band, 0, 255, out=band)
        if haze > 0:
            band = add_haze(band, np.float32(haze), np.float32(airlight), white=255.0)
        rainy[top : top + rows] = np.rint(band)  # OpenCV rounds half to even, as np.rint does
    return rainy, layer.astype(np.uint8), draw.row(0, entries)


# ----------------------------------------------------------------------------- measurements
def coverage(layer: np.ndarray, threshold: int = 50) -> float:
    """Fraction of pixels of a rain layer (0..255) above `threshold` (the binary mask's share)."""
    return float(np.mean(np.asarray(layer) > threshold))


def measure_streak_angle(layer: np.ndarray) -> float:
    """Dominant streak orientation of a rain layer HxW (any dtype), in degrees from vertical,
    counter-clockwise positive, in (-90, 90]; NaN for a flat layer. Uses the structure tensor of
    the layer smoothed with a Gaussian (sigma 1 px), which hides the pixel-grid texture of thin
    streaks that would otherwise pull the estimate towards ±45°."""
    from scipy.ndimage import gaussian_filter

    grad_y, grad_x = np.gradient(gaussian_filter(np.asarray(layer, dtype=np.float64), sigma=1.0))
    jxx, jyy, jxy = float((grad_x**2).sum()), float((grad_y**2).sum()), float((grad_x * grad_y).sum())
    if jxx + jyy == 0:
        return float("nan")
    # Gradients point across the streaks: their orientation is the streak angle, negated
    # (image rows grow downwards).
    gradient_angle = 0.5 * math.degrees(math.atan2(2 * jxy, jxx - jyy))
    angle = -gradient_angle
    return angle + 180.0 if angle <= -90.0 else angle
