"""The stamping back end: sparse seeds drawn as the survivors of the threshold, and R as the sum of
value-weighted kernel stamps (torch scatter-add on CUDA, the compiled loop of cpu_kernels on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pipeline.synthesis.kernels import _reflect101, _SparseKernel

if TYPE_CHECKING:
    import torch

# (seed, kernel entry) pairs per scatter: large enough to amortize the call, small enough to stay
# in cache.
_PAIR_CHUNK = 1 << 16


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
    log_fail = _log(survive, complement=True)[:, None]  # log(1 - amount) <= 0
    expected = pixels * float(survive.max())
    block = int(expected + 6 * math.sqrt(expected) + 16)  # runs short about once in a billion
    blocks, last = [], 0.0
    while True:
        # floor(log(u) / log(1 - p)) for u ~ U[0,1) is geometric: P(>= k) = (1 - p)^k, the
        # failures before the next survivor. Amount 0 divides by -0.0: +inf, clamped to a gap past
        # the image; amount 1 gives 0 (and nan for u = 0, also 0).
        gaps = _log(torch.rand((n, block), generator=generator, device=device, dtype=torch.float64))
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


def _log(values: "torch.Tensor", complement: bool = False) -> "torch.Tensor":
    """log(values), or log(1 - values) with `complement`, of float64 values in [0, 1]; -inf where
    the argument is 0.

    On CPU through Python's math (glibc's scalar log: one code path on every x86-64 with AVX2 +
    FMA), not torch's vectorized log, whose implementation (MKL's vector math, Sleef, per SIMD
    width) follows the CPU: a last-bit change could move a survivor by a pixel on another machine.
    A few thousand values per image. On CUDA torch's own (the GPU's rain is its own anyway)."""
    import torch

    if values.device.type != "cpu":
        return torch.log1p(-values) if complement else torch.log(values)
    flat = values.flatten().tolist()
    if complement:
        logs = [math.log1p(-v) if v < 1.0 else -math.inf for v in flat]
    else:
        logs = [math.log(v) if v > 0.0 else -math.inf for v in flat]
    return torch.tensor(logs, dtype=torch.float64).view(values.shape)


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
