"""Content-complexity measures of RGB images: how much a network has to draw to rebuild them.

Every measure takes uint8 RGB in [0, 255], either one image (H, W, 3) or a stack (..., H, W, 3),
and returns float64 of the leading shape (a 0-d array for one image; `float()` it). Grey values
are BT.601 luma (0.299 R + 0.587 G + 0.114 B) in [0, 255], the same weights PIL's "L" mode uses.

| measure      | what it is                                              | range                 |
|--------------|---------------------------------------------------------|-----------------------|
| gradient     | mean magnitude of the forward-difference grey gradient  | [0, 255·√2 ≈ 360.6]   |
| laplacian    | variance of the 4-neighbour grey Laplacian (sharpness)  | [0, (4·255)² = 1040400] |
| entropy      | Shannon entropy of the 256-bin grey histogram, bits     | [0, 8]                |
| png_bpp      | PNG-compressed size in bits per pixel (zlib level 1)    | [0, 64] (see below)   |
| colorfulness | Hasler & Süsstrunk (2003) colourfulness M; 0 if grey    | [0, 1.3·255·√2 ≈ 468.8] |

png_bpp is ≈24 for incompressible noise and near 0 for flat content; the PNG container adds a
fixed overhead that matters only on tiny images (≈27 bpp for 16² noise), hence the [0, 64] bound.

Flat images score 0 on every measure except png_bpp (which keeps the PNG container overhead).
Entropy ignores where values are: a smooth ramp over all 256 levels scores 8 bits, like noise;
gradient, laplacian and png_bpp tell the two apart.
Hasler & Süsstrunk's own scale for M: ≈15 slightly, ≈33 moderately, ≈59 quite, ≈82 highly,
≈109 extremely colourful.
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np

from pipeline.params.curate import COMPLEXITY_MEASURES

# Inclusive [low, high] bounds every value must fall in (used by the data checks).
MEASURE_RANGES: dict[str, tuple[float, float]] = {
    "gradient": (0.0, 255.0 * math.sqrt(2.0)),
    "laplacian": (0.0, (4.0 * 255.0) ** 2),
    "entropy": (0.0, 8.0),
    "png_bpp": (0.0, 64.0),
    "colorfulness": (0.0, 1.3 * 255.0 * math.sqrt(2.0)),
}

_LUMA = np.array([0.299, 0.587, 0.114])


def _as_stack(images: np.ndarray, min_side: int = 1) -> tuple[np.ndarray, tuple[int, ...]]:
    """Check uint8 (..., H, W, 3) and return it as (N, H, W, 3) plus the leading shape."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB of shape (..., H, W, 3), got {images.dtype} {images.shape}")
    if min(images.shape[-3:-1]) < min_side:
        height, width = images.shape[-3:-1]
        raise ValueError(f"image of {height}x{width} px is too small: need ≥ {min_side} px per side")
    lead = images.shape[:-3]
    return images.reshape((-1, *images.shape[-3:])), lead


def grey(images: np.ndarray) -> np.ndarray:
    """BT.601 luma of uint8 (..., H, W, 3) RGB: float64 (..., H, W) in [0, 255]."""
    return np.asarray(images, dtype=np.float64) @ _LUMA


def gradient(images: np.ndarray) -> np.ndarray:
    """Mean grey gradient magnitude sqrt(dx² + dy²), forward differences, in [0, 255·√2].

    Forward (not central) differences so that a one-pixel stripe pattern is seen at full
    strength: vertical 0/255 stripes one pixel wide score exactly 255.
    """
    stack, lead = _as_stack(images, min_side=2)
    luma = grey(stack)
    dx = luma[:, :-1, 1:] - luma[:, :-1, :-1]
    dy = luma[:, 1:, :-1] - luma[:, :-1, :-1]
    return np.sqrt(dx * dx + dy * dy).mean(axis=(1, 2)).reshape(lead)


def laplacian(images: np.ndarray) -> np.ndarray:
    """Variance of the 4-neighbour grey Laplacian over the interior, in [0, 1040400].

    The common "variance of Laplacian" sharpness score (same kernel as OpenCV's default
    Laplacian); blurred or flat content scores low.
    """
    stack, lead = _as_stack(images, min_side=3)
    luma = grey(stack)
    lap = (
        luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]
        - 4.0 * luma[:, 1:-1, 1:-1]
    )
    return lap.var(axis=(1, 2)).reshape(lead)


def entropy(images: np.ndarray) -> np.ndarray:
    """Shannon entropy of the 256-bin histogram of the rounded grey image, bits in [0, 8]."""
    stack, lead = _as_stack(images)
    levels = np.clip(np.rint(grey(stack)), 0, 255).astype(np.int64).reshape(len(stack), -1)
    # One bincount for the whole stack: offset each image's levels into its own 256 slots.
    offsets = (np.arange(len(stack)) * 256)[:, None]
    counts = np.bincount((levels + offsets).ravel(), minlength=256 * len(stack)).reshape(-1, 256)
    p = counts / levels.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return np.abs(bits).reshape(lead)  # abs: a one-level image gives -0.0


def png_bpp(images: np.ndarray) -> np.ndarray:
    """Bits per pixel of the image saved as RGB PNG (zlib level 1: the fastest; no metadata).

    About 24 for incompressible noise; near 0 for flat images, where the fixed PNG container
    overhead (≈0.45 bpp on a 64² patch, ≈10 on an 8² one) dominates.
    """
    from PIL import Image

    stack, lead = _as_stack(images)
    height, width = stack.shape[1:3]
    sizes = np.empty(len(stack))
    for i, image in enumerate(stack):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        sizes[i] = buffer.tell()
    return (sizes * 8.0 / (height * width)).reshape(lead)


def colorfulness(images: np.ndarray) -> np.ndarray:
    """Hasler & Süsstrunk colourfulness in 0..255 units: sqrt(σrg² + σyb²) + 0.3·sqrt(μrg² + μyb²).

    rg = R − G, yb = (R + G)/2 − B. 0 for any grey image; a flat pure red image scores
    0.3·sqrt(255² + 127.5²) ≈ 85.5.
    """
    stack, lead = _as_stack(images)
    rgb = stack.astype(np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    spread = np.sqrt(rg.var(axis=(1, 2)) + yb.var(axis=(1, 2)))
    mean = np.sqrt(rg.mean(axis=(1, 2)) ** 2 + yb.mean(axis=(1, 2)) ** 2)
    return (spread + 0.3 * mean).reshape(lead)


MEASURE_FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "gradient": gradient,
    "laplacian": laplacian,
    "entropy": entropy,
    "png_bpp": png_bpp,
    "colorfulness": colorfulness,
}
MEASURES = COMPLEXITY_MEASURES  # the names curate.complexity may take, in column order (pipeline.params.curate)


def measure_all(images: np.ndarray, decimals: int = 4) -> dict[str, np.ndarray]:
    """Every measure of uint8 (..., H, W, 3) RGB, rounded to `decimals` (so CSV round-trips exactly)."""
    return {name: np.round(MEASURE_FUNCTIONS[name](images), decimals) for name in MEASURES}
