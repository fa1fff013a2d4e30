"""Rain layers R from drawn parameters: the FFT back end, min-max normalization, and the one
dispatch between stamping and FFT convolution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.synthesis.draws import RainDraw
from pipeline.synthesis.kernels import _reflect101, _sparse_kernels, streak_kernels
from pipeline.synthesis.stamping import (
    _draw_seeds,
    _render_on_cpu,
    _seed_field,
    _Seeds,
    _sparse_seeds,
    _stamp,
    _stamp_positions,
    _to_device,
)

if TYPE_CHECKING:
    import torch

# Pixels per FFT band (≈2 M): bounds the working memory for large images; 512² fits in one band.
_BAND_PIXELS = 1 << 21
# Above this share of surviving seeds a dense noise field is cheaper to hold than a list of seeds.
_SPARSE_SEED_LIMIT = 0.05
# Stamping costs about 1/16 of an FFT-convolved padded pixel per (seed, kernel entry) pair on CPU:
# stamp while the pairs number at most this many times the padded pixels.
_PAIRS_PER_FFT_PIXEL = 16
_METHODS = ("auto", "sparse", "fft")


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
