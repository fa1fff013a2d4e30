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

Modules: presets (named recipes) · draws (entries, parameter draws) · kernels (streak kernels) ·
stamping (sparse seeds, stamps) · render (FFT, normalization, the dispatch) · rain (this API:
batches and single images) · measure (coverage, streak angle).

torch is imported inside functions: these modules are importable without paying for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from pipeline.synthesis.draws import RainSpec, draw_rain_params, resolve_rain
from pipeline.synthesis.render import _BAND_PIXELS, _draw_layers

# Re-exported: the names existing importers (tests/data/test_rain.py, benchmarks/bench_rain.py, callers
# of the engine) take from this module, which was the whole engine before it was split.
from pipeline.params.rain import RainConfig  # noqa: F401
from pipeline.synthesis.draws import RainDraw  # noqa: F401
from pipeline.synthesis.kernels import _KERNEL_CACHE, _NEGLIGIBLE_WEIGHT, _sparse_kernels, streak_kernels  # noqa: F401
from pipeline.synthesis.measure import coverage, measure_streak_angle  # noqa: F401
from pipeline.params.presets import PRESET_CONFIGS, PRESETS  # noqa: F401
from pipeline.synthesis.render import _normalize, render_rain_layers  # noqa: F401
from pipeline.synthesis.stamping import (  # noqa: F401
    _draw_seeds,
    _reflect101_copies,
    _render_on_cpu,
    _stamp,
    _stamp_positions,
)

if TYPE_CHECKING:
    import torch


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
