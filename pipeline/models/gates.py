"""Gates on the rain mask: what the composition may re-draw, from the physics of the rain models.

Every rain model here adds light to thin structures, and the streaks of one shower fall at (nearly)
one angle. Both facts are cheap to measure on the input and hold for rain kinds the mask head never
saw, so they multiply the learned mask (pipeline.models.masked):

- `bright_excess`: how much brighter a pixel is than its surroundings (white top-hat);
- `streak_alignment`: how well the bright structure through a pixel is oriented along the image's
  dominant streak direction. A pebble's highlight or a leaf is bright but turns every way; a
  streak lies along the shower;
- `shower_spread`: how evenly the (gated) mask covers the frame. A shower falls everywhere; the
  texture the head mistakes for rain (bristles, foam, bark) covers objects, and a dry photo or one
  with drops on the lens leaves most of the frame unmarked.

Shapes: x float32 (N, 3, H, W) in [0, 1]; gates (N, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GATE_SCALE = 0.05  # top-hat (0..1) at which the bright gate is fully open: 13 grey levels brighter than around
STREAK_WINDOW = 11  # px: the top-hat window the streak gate reads when the bright gate is off
SHOWER_CELL = 32  # px: the cells whose mean mask shower_spread compares (a few streaks cross each)
SHOWER_QUANTILE = 0.25  # the share of cells that may lie under the spread; rain leaves none empty
ALIGNMENT_SIGMA = 3.0  # px: structure-tensor smoothing, wide enough to reach the middle of a 7-px streak from its edges


def _sliding_max(values: torch.Tensor, window: int, dim: int) -> torch.Tensor:
    """Maximum over `window` consecutive elements along `dim`, for every start: the length shrinks
    by window - 1. By doubling spans (1, 2, 4, ... then one overlapping pair), so it costs
    ~log2(window) elementwise maxima instead of max_pool2d's `window` comparisons per pixel (the
    opening of a 1024² map: 21 ms against 318 ms at 21 px, 2 threads), with the same values: a
    maximum is exact in any order."""
    span = 1
    while span * 2 <= window:
        length = values.shape[dim]
        values = torch.maximum(values.narrow(dim, 0, length - span), values.narrow(dim, span, length - span))
        span *= 2  # values[i] = max of the input's [i, i + span)
    if span < window:
        length = values.shape[dim] - (window - span)
        values = torch.maximum(values.narrow(dim, 0, length), values.narrow(dim, window - span, length))
    return values


def opening(image: torch.Tensor, window: int) -> torch.Tensor:
    """Grey-level opening (erosion then dilation) of every channel over `window` x `window` px
    (`window` odd, so the window is centred), same shape as `image` (N, C, H, W): bright
    structures thinner than the window are replaced by their surroundings, everything wider is
    kept. Separable sliding min/max with edge replication."""
    pad = window // 2

    def pool(values: torch.Tensor, sign: float) -> torch.Tensor:  # max (sign 1) or min (sign -1)
        values = _sliding_max(F.pad(values * sign, (pad, pad, 0, 0), mode="replicate"), window, dim=3)
        return _sliding_max(F.pad(values, (0, 0, pad, pad), mode="replicate"), window, dim=2) * sign

    return pool(pool(image, -1.0), 1.0)


def bright_excess(x: torch.Tensor, window: int) -> torch.Tensor:
    """White top-hat of the grey image, (N, 1, H, W) in [0, 1]: how much brighter each pixel is
    than its opening over `window` x `window` px, i.e. the light of bright structures thinner than
    the window. 0 beside a streak (its halo) and on flat areas."""
    grey = x.mean(dim=1, keepdim=True)
    return (grey - opening(grey, window)).clamp(min=0.0)


def _gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (truncated at 3 sigma) of (N, C, H, W) with edge replication.
    torchvision's gaussian_blur pads by reflection, which fails on images narrower than the kernel
    (a 5x5 request to the server); replication works at any size. Channels are folded into the
    batch: one single-channel convolution is ~3x faster on the CPU than the grouped one."""
    radius = int(3 * sigma)
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device) ** 2 / (2 * sigma**2))
    taps = (taps / taps.sum()).view(1, 1, 1, -1)
    n, c, h, w = maps.shape
    flat = F.conv2d(F.pad(maps.reshape(n * c, 1, h, w), (radius, radius, 0, 0), mode="replicate"), taps)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), taps.transpose(2, 3))
    return flat.reshape(n, c, h, w)


def streak_alignment(excess: torch.Tensor, open_at: float) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] from the top-hat `excess` (N, 1, H, W): 1 where the bright structure
    is oriented along the image's dominant direction with at least `open_at` (0..1] of full
    agreement, falling linearly to 0 at no agreement (unoriented, or across the dominant direction).

    The structure tensor J of the top-hat, smoothed over ALIGNMENT_SIGMA, gives each pixel an
    orientation as the double-angle vector v = (Jxx - Jyy, 2 Jxy), |v| <= trace(J); the image's
    dominant orientation is the direction of the sum of v over the image (energy-weighted, so the
    many streaks of a shower outvote scattered texture). Agreement = v · dominant / trace(J), in
    [-1, 1]. Computed per image (per tile when tiled), from the input alone.
    """
    edged = F.pad(excess, (1, 1, 1, 1), mode="replicate")  # central differences, any image size
    grad_x = (edged[..., 1:-1, 2:] - edged[..., 1:-1, :-2]) / 2.0
    grad_y = (edged[..., 2:, 1:-1] - edged[..., :-2, 1:-1]) / 2.0
    tensor = _gaussian_blur(torch.cat([grad_x * grad_x, grad_y * grad_y, grad_x * grad_y], dim=1), ALIGNMENT_SIGMA)
    jxx, jyy, jxy = tensor.split(1, dim=1)
    vx, vy = jxx - jyy, 2.0 * jxy
    dominant = torch.cat([vx.sum((2, 3), keepdim=True), vy.sum((2, 3), keepdim=True)], dim=1)
    dominant = dominant / dominant.norm(dim=1, keepdim=True).clamp(min=1e-12)
    agreement = (vx * dominant[:, :1] + vy * dominant[:, 1:]) / (jxx + jyy).clamp(min=1e-12)
    return (agreement / open_at).clamp(0.0, 1.0)


def shower_spread(mask: torch.Tensor) -> torch.Tensor:
    """(N,) in [0, 1] from a mask (N, 1, H, W) in [0, 1]: the 25th percentile of its mean over
    SHOWER_CELL-px cells, divided by the mean over all cells (0 when the mask is empty). Near 1
    when the mask covers the frame evenly, as a shower does; 0 when a quarter of the frame is
    unmarked. Cells shrink to the image's shorter side for images smaller than one cell; partial
    cells at the right and bottom edges are averaged over the pixels they hold."""
    cell = min(SHOWER_CELL, *mask.shape[-2:])
    cells = F.avg_pool2d(mask, cell, ceil_mode=True).flatten(1)
    return (cells.quantile(SHOWER_QUANTILE, dim=1) / cells.mean(dim=1).clamp(min=1e-12)).clamp(max=1.0)
