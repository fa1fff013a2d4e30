"""Run a deraining model on images of any size: tiled, blended, with bounded memory.

The model contract (pipeline.models.factory): ``model(x)`` takes float32 NCHW in [0, 1] of any
height and width and returns the same shape in [0, 1].

Large images are cut into overlapping tiles. In each overlap the tiles are cross-faded with
linear ramps, so no seam shows where one tile's border effects meet the next. The tiles are
processed one row of tiles at a time and every finished row of pixels is written straight into
the uint8 output, so memory beyond the input and output images is a few tiles and one strip of
``tile`` rows of float32, whatever the image size.
"""

from __future__ import annotations

import math

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of edge `tile` covering [0, length), neighbours sharing >= `overlap` px.

    One tile when `length <= tile`. Otherwise the fewest tiles that fit, spread evenly so that
    the first starts at 0 and the last ends exactly at `length` (no padding needed).
    """
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    # Integer floor keeps every step <= tile - overlap, so no overlap shrinks below `overlap`.
    return [i * (length - tile) // (count - 1) for i in range(count)]


def blend_weights(starts: list[int], tile: int, length: int, overlap: int) -> list[np.ndarray]:
    """Per-tile 1-D weights (float32, length `min(tile, length)`) that sum to 1 at every pixel.

    Each tile gets a ramp that rises over `overlap` pixels at its borders; dividing by the sum
    over tiles normalizes it. A pixel covered by one tile gets weight 1.
    """
    size = min(tile, length)
    position = np.arange(size, dtype=np.float32)
    ramp = np.minimum(1.0, np.minimum(position + 1, size - position) / (overlap + 1)).astype(np.float32)
    total = np.zeros(length, dtype=np.float32)
    for start in starts:
        total[start : start + size] += ramp
    return [ramp / total[start : start + size] for start in starts]


def _check_settings(tile: int, overlap: int) -> None:
    if tile < 1 or overlap < 0 or 2 * overlap > tile:
        raise ValueError(f"tiling needs tile >= 1 and 0 <= overlap <= tile / 2, got tile={tile}, overlap={overlap}")


def _model_device(model, device):
    import torch

    if device is not None:
        return torch.device(device)
    parameter = next(iter(model.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _forward(model, batch: np.ndarray, device) -> np.ndarray:
    """uint8 NHWC in [0, 255] -> model -> float32 NHWC in [0, 1] (on the CPU)."""
    import torch

    # NHWC memory viewed as NCHW is channels_last, which CPU convolutions run ~1.5x faster on.
    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2)
    x = x.to(torch.float32, memory_format=torch.channels_last).div_(255.0)
    y = model(x)
    if y.shape != x.shape:
        raise ValueError(f"the model returned shape {tuple(y.shape)} for input {tuple(x.shape)}; it must keep the shape")
    return y.clamp_(0.0, 1.0).permute(0, 2, 3, 1).float().cpu().numpy()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] -> uint8 in [0, 255], rounded to nearest (one float temporary)."""
    scaled = image * np.float32(255.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} with shape {image.shape}")


def derain_array(model, image: np.ndarray, tile: int = 512, overlap: int = 32, device=None) -> np.ndarray:
    """Derain one uint8 HxWx3 RGB image in [0, 255] of any size; returns uint8 HxWx3.

    Images up to `tile` on both sides go through the model whole. Larger ones are tiled (edge
    `tile`, neighbours overlapping by at least `overlap` px, cross-faded). `device` defaults to
    the device of the model's parameters (CPU for a parameter-free model).
    """
    import torch

    _check_image(image)
    _check_settings(tile, overlap)
    device = _model_device(model, device)
    height, width = image.shape[:2]
    with torch.inference_mode():
        if height <= tile and width <= tile:
            return _to_uint8(_forward(model, image[None], device)[0])
        return _derain_tiled(model, image, tile, overlap, device)


def _derain_tiled(model, image: np.ndarray, tile: int, overlap: int, device) -> np.ndarray:
    height, width = image.shape[:2]
    ys, xs = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    wys, wxs = blend_weights(ys, tile, height, overlap), blend_weights(xs, tile, width, overlap)
    tile_h, tile_w = min(tile, height), min(tile, width)
    output = np.empty_like(image)
    # `pending` holds the blended sum of rows [done, done + len(pending)) that a later row of
    # tiles may still add to; rows above the next tile row's start are final.
    done = 0
    pending = np.zeros((0, width, 3), dtype=np.float32)
    for row, (y0, wy) in enumerate(zip(ys, wys)):
        end = y0 + tile_h - done
        if end > len(pending):
            pending = np.concatenate([pending, np.zeros((end - len(pending), width, 3), np.float32)])
        for x0, wx in zip(xs, wxs):
            result = _forward(model, image[None, y0 : y0 + tile_h, x0 : x0 + tile_w], device)[0]
            pending[y0 - done : end, x0 : x0 + tile_w] += result * wy[:, None, None] * wx[None, :, None]
        final = (ys[row + 1] if row + 1 < len(ys) else height) - done
        output[done : done + final] = _to_uint8(pending[:final])
        pending = pending[final:]
        done += final
    return output


def derain_batch(
    model,
    images: np.ndarray,
    batch_size: int = 8,
    tile: int = 512,
    overlap: int = 32,
    device=None,
) -> np.ndarray:
    """Derain many same-size images: uint8 NxHxWx3 in [0, 255] -> uint8 NxHxWx3.

    Images up to `tile` on both sides go through the model `batch_size` at a time; larger ones
    are tiled one image at a time (`derain_array`), since their tiles already fill the model.
    """
    import torch

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected a uint8 NxHxWx3 stack of same-size images, got shape {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images):
        _check_image(images[0])
    _check_settings(tile, overlap)
    height, width = images.shape[1:3]
    if height > tile or width > tile:
        return np.stack([derain_array(model, image, tile, overlap, device) for image in images]) if len(images) else images.copy()
    device = _model_device(model, device)
    output = np.empty_like(images)
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            output[start : start + batch_size] = _to_uint8(_forward(model, images[start : start + batch_size], device))
    return output
