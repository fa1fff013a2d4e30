"""Measurements of a rain layer (0..255): mask coverage and the dominant streak angle."""

from __future__ import annotations

import math

import numpy as np


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
