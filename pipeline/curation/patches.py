"""Grid patches of a photo, their complexity, and the centre crops used for evaluation."""

from __future__ import annotations

import numpy as np

from pipeline.curation.complexity import MEASURES, measure_all

EVAL_MULTIPLE = 16  # eval crops shrink to a multiple of this (models downsample by up to 2**4)


def grid_positions(height: int, width: int, size: int, stride: int) -> np.ndarray:
    """Top-left (y, x) of every size×size patch on a stride grid, int64 (N, 2), row-major.

    The grid is centred, so the unused margin is split between both sides instead of all
    falling on the right and bottom. A photo smaller than `size` has no patches (N = 0).
    """
    if height < size or width < size:
        return np.zeros((0, 2), dtype=np.int64)
    axes = []
    for extent in (height, width):
        count = (extent - size) // stride + 1
        margin = extent - size - (count - 1) * stride
        axes.append(margin // 2 + stride * np.arange(count))
    ys, xs = np.meshgrid(*axes, indexing="ij")
    return np.stack([ys.ravel(), xs.ravel()], axis=1).astype(np.int64)


def cut_patches(image: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    """Patches of uint8 (H, W, 3) at (y, x) positions: uint8 (N, size, size, 3), a copy."""
    windows = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))
    # windows[y, x] is (3, size, size): move channels last.
    return np.ascontiguousarray(windows[positions[:, 0], positions[:, 1]].transpose(0, 2, 3, 1))


def measure_patches(image: np.ndarray, positions: np.ndarray, size: int, chunk: int = 256) -> np.ndarray:
    """Every complexity measure of every patch: float64 (N, len(MEASURES)), columns in MEASURES order.

    Works `chunk` patches at a time so memory stays bounded on large photos with dense grids.
    """
    out = np.zeros((len(positions), len(MEASURES)))
    for start in range(0, len(positions), chunk):
        values = measure_all(cut_patches(image, positions[start : start + chunk], size))
        out[start : start + chunk] = np.stack([values[name] for name in MEASURES], axis=1)
    return out


def eval_crop_size(height: int, width: int, eval_size: int) -> int:
    """Edge of the eval crop: eval_size, or for a smaller photo its short side rounded down to 16."""
    short = min(height, width)
    return eval_size if short >= eval_size else (short // EVAL_MULTIPLE) * EVAL_MULTIPLE


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The centred size×size crop of uint8 (H, W, 3): uint8 (size, size, 3), a copy."""
    height, width = image.shape[:2]
    if not 0 < size <= min(height, width):
        raise ValueError(f"cannot take a {size}² crop of a {height}x{width} image")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size].copy()


def eval_crops(image: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    """Up to `count` size×size crops of uint8 (H, W, 3), spread evenly over the centred grid of
    non-overlapping positions (one crop: the centre crop). Copies, in row-major grid order."""
    if count == 1:
        return [centre_crop(image, size)]
    positions = grid_positions(image.shape[0], image.shape[1], size, size)
    if len(positions) == 0:
        raise ValueError(f"cannot take a {size}² crop of a {image.shape[0]}x{image.shape[1]} image")
    chosen = np.unique(np.linspace(0, len(positions) - 1, min(count, len(positions))).round().astype(int))
    return [image[y : y + size, x : x + size].copy() for y, x in positions[chosen]]
