"""Streak kernels: the recipe's rotated, Gaussian-thickened line in closed form (OpenCV's
arithmetic, the 3×3 seed smoothing folded in), and its sparse form cached per (length, angle, width).

Machine-independent on purpose: the suites are rounded from these weights, so a last-bit change
can move a pixel of R by one level. Only + - * / and rounding run on tensors (IEEE-exact on every
SIMD width and on CUDA); cos, sin and exp are Python's `math` on a few scalars (glibc's scalar
routines: one code path on every x86-64 with AVX2 + FMA); the Gaussian and the 3×3 smoothing are
sums of shifted slices in a fixed order instead of conv2d, whose backend (oneDNN's JIT kernels for
a batch, im2col + BLAS for one kernel) and its summation order follow the CPU and the batch size.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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
# Kernel entries below this fraction of the kernel's peak are dropped from the stamps: even summed
# over overlapping streaks they move R by less than one level (benchmarks/bench_rain.py checks it),
# and they are a quarter of the entries.
_NEGLIGIBLE_WEIGHT = 2e-3
# Sparse kernels kept for reuse, keyed by (length, angle, width): 3 KB each at the presets.
_KERNEL_CACHE_SIZE = 4096
_KERNEL_CACHE: "OrderedDict[tuple[int, int, int], _SparseKernel]" = OrderedDict()


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
            # math.exp and fsum: torch's vectorized exp and sum follow the CPU's SIMD width.
            values = [math.exp(-(x * x) / (2 * sigma**2)) for x in (i - (size - 1) / 2 for i in range(size))]
            total = math.fsum(values)
            row = torch.tensor([value / total for value in values], dtype=torch.float64)
        start = (taps - size) // 2
        weights[width == size, start : start + size] = row.float().to(width.device)
    return weights


def _opencv_warp_sources(angle, length, x, y):
    """Where OpenCV's warpAffine samples the source for destination pixels (x, y) (float64 grids),
    for cv2.getRotationMatrix2D((L/2, L/2), angle - 45, 1): (u0, fu, v0, fv), integer part and
    fraction of the source column u and row v. Mirrors its fixed-point arithmetic exactly (the
    inverse matrix scaled by 2**10, rounded, then cut to 1/32 px) so kernels match bit for bit."""
    import torch

    # Python's math on the (integer) angles: torch's vectorized cos/sin differ in the last bit by CPU.
    radians = [(a - 45) * math.pi / 180 for a in angle.tolist()]
    cos = torch.tensor([math.cos(r) for r in radians], dtype=torch.float64, device=angle.device)[:, None, None]
    sin = torch.tensor([math.sin(r) for r in radians], dtype=torch.float64, device=angle.device)[:, None, None]
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
    blurred = _correlate(_correlate(padded, taps, axis=2), taps, axis=1) * box

    # The smoothing kernel is symmetric, so it commutes with the flip and with reflect-101 padding;
    # zero padding, as conv2d's padding=1 did.
    return _smooth(F.pad(blurred, (1, 1, 1, 1))), pad


def _correlate(values: "torch.Tensor", taps: "torch.Tensor", axis: int) -> "torch.Tensor":
    """Per sample, sum_i taps[:, i] · (values shifted by i along `axis`), valid part only: float32
    (N, A, B) values and (N, T) taps -> (N, A - T + 1, B) for axis 1, (N, A, B - T + 1) for axis 2.
    Summed in tap order, one IEEE multiply and add at a time, so every CPU gets the same bits."""
    count = taps.shape[1]
    width = values.shape[axis] - count + 1
    index = [slice(None)] * 3
    total = None
    for i in range(count):
        index[axis] = slice(i, i + width)
        term = values[tuple(index)] * taps[:, i].view(-1, 1, 1)
        total = term if total is None else total.add_(term)
    return total


def _smooth(padded: "torch.Tensor") -> "torch.Tensor":
    """The 3×3 seed smoothing of a zero-padded float32 (N, S + 2, S + 2) stack: (N, S, S), its
    non-zero taps summed in row order (see _correlate for why not conv2d)."""
    rows, cols = padded.shape[1] - 2, padded.shape[2] - 2
    total = None
    for dy, row in enumerate(_SEED_SMOOTHING):
        for dx, weight in enumerate(row):
            if weight:
                term = padded[:, dy : dy + rows, dx : dx + cols] * weight
                total = term if total is None else total.add_(term)
    return total


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
