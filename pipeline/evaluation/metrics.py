"""Image-quality metrics for deraining, whole-image and masked (method.md, "Masked evaluation").

Pure functions. Images are HxWx3 RGB arrays, uint8 or float, with values in [0, 255]; they are
compared in float64. Rain layers are HxW arrays in [0, 255] (the synthesized R, or a user mask).

Conventions, fixed once for every metric here:
- PSNR = 10·log10(255² / MSE) in dB, peak 255, capped at ``PSNR_CAP`` = 100 dB: two identical
  images (MSE = 0) score 100 instead of infinity, so means and differences stay finite. The cap
  is an MSE of 6.5e-6, far below any error a restoration model makes (one grey level on one
  channel of one pixel of a 128² image is already 95 dB).
- Y channel: ``psnr_y601`` uses BT.601 *limited-range* luma, Y = 16 + (65.481·R + 128.553·G +
  24.966·B) / 255 with R, G, B in [0, 255], so Y is in [16, 235]: the definition of MATLAB's
  ``rgb2ycbcr``, BasicSR and scikit-image's ``rgb2ycbcr``, not rounded. Because its scale is
  219/255 of full-range luma (0.299·R + 0.587·G + 0.114·B), it reads 20·log10(255/219) ≈ 1.32 dB
  above a full-range-luma PSNR on the same pair of images.
- SSIM: scikit-image's ``structural_similarity`` with the settings of Wang et al. (2004), also
  used by BasicSR: 11×11 Gaussian window (σ = 1.5), population covariance, data range 255,
  K1 = 0.01, K2 = 0.03; RGB is the mean of the per-channel SSIMs. In [-1, 1], 1 when identical.
  Images must be at least 11 pixels on each side.
- Tensors: ``batch_psnr`` is the same PSNR for float32 NCHW tensors in [0, 1] (peak 1.0, the
  same cap), for what training scores before any rounding to uint8 (the prior's reconstructions);
  its MSE is computed in float32, then taken to float64.
- Masked MSE: Σ(O−B)²·M / (3·ΣM) over all pixels and channels, with M in [0, 1] per pixel. The
  rain-region score uses M, the background score 1−M. An empty region (ΣM = 0) gives NaN, never a
  division by zero; callers exclude NaN from means and count it.
"""

from __future__ import annotations

import math

import numpy as np

PEAK = 255.0
PSNR_CAP = 100.0
SSIM_MIN_SIDE = 11
# BT.601 limited-range luma: weights for R, G, B in [0, 1] giving Y in [16, 235].
Y601_WEIGHTS = np.array([65.481, 128.553, 24.966])
Y601_OFFSET = 16.0


def _as_float(image: np.ndarray, name: str = "image") -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(f"{name} must be HxWx3 RGB, got shape {array.shape}")
    return array


def _check_pair(output: np.ndarray, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    output, clean = _as_float(output, "output"), _as_float(clean, "clean")
    if output.shape != clean.shape:
        raise ValueError(f"images differ in shape: {output.shape} vs {clean.shape}")
    return output, clean


def psnr_from_mse(mse: float, peak: float = PEAK) -> float:
    """PSNR in dB in (-inf, PSNR_CAP] from a mean squared error in [0, peak²]; NaN stays NaN."""
    if math.isnan(mse):
        return math.nan
    if mse <= 0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(peak * peak / mse))


def mse(output: np.ndarray, clean: np.ndarray) -> float:
    """Mean squared error over all pixels and channels of two HxWx3 images in [0, 255]: in [0, 255²]."""
    output, clean = _check_pair(output, clean)
    return float(np.mean((output - clean) ** 2))


def psnr(output: np.ndarray, clean: np.ndarray) -> float:
    """Whole-image RGB PSNR in dB in (-inf, 100] of two HxWx3 images in [0, 255]."""
    return psnr_from_mse(mse(output, clean))


def rgb_to_y601(image: np.ndarray) -> np.ndarray:
    """BT.601 limited-range luma of an HxWx3 RGB image in [0, 255]: float64 HxW in [16, 235]."""
    return _as_float(image) @ (Y601_WEIGHTS / PEAK) + Y601_OFFSET


def psnr_y601(output: np.ndarray, clean: np.ndarray) -> float:
    """PSNR in dB in (-inf, 100] on BT.601 limited-range Y (see the module docstring), peak 255."""
    output, clean = _check_pair(output, clean)
    diff = rgb_to_y601(output) - rgb_to_y601(clean)
    return psnr_from_mse(float(np.mean(diff**2)))


def _ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None) -> float:
    from skimage.metrics import structural_similarity

    if min(a.shape[:2]) < SSIM_MIN_SIDE:
        raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels, got {a.shape[:2]}")
    return float(
        structural_similarity(
            a,
            b,
            data_range=PEAK,
            channel_axis=channel_axis,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def ssim(output: np.ndarray, clean: np.ndarray) -> float:
    """RGB SSIM in [-1, 1] (mean over channels) of two HxWx3 images in [0, 255]; settings above."""
    output, clean = _check_pair(output, clean)
    return _ssim(output, clean, channel_axis=-1)


def ssim_y601(output: np.ndarray, clean: np.ndarray) -> float:
    """SSIM in [-1, 1] on BT.601 limited-range Y of two HxWx3 images in [0, 255]."""
    output, clean = _check_pair(output, clean)
    return _ssim(rgb_to_y601(output), rgb_to_y601(clean), channel_axis=None)


def binary_mask(rain: np.ndarray, threshold: float) -> np.ndarray:
    """Rain mask M = (R > threshold) from a rain layer HxW in [0, 255]: float64 HxW in {0, 1}."""
    return (np.asarray(rain, dtype=np.float64) > threshold).astype(np.float64)


def soft_mask(rain: np.ndarray) -> np.ndarray:
    """Soft rain mask M = R / 255 from a rain layer HxW in [0, 255]: float64 HxW in [0, 1]."""
    return np.clip(np.asarray(rain, dtype=np.float64) / PEAK, 0.0, 1.0)


def masked_mse(output: np.ndarray, clean: np.ndarray, weight: np.ndarray) -> float:
    """Σ(O−B)²·M / (3·ΣM) for HxWx3 images in [0, 255] and weights M HxW in [0, 1].

    In [0, 255²]; NaN when the region is empty (ΣM = 0).
    """
    output, clean = _check_pair(output, clean)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.shape != output.shape[:2]:
        raise ValueError(f"mask shape {weight.shape} does not match image shape {output.shape[:2]}")
    total = float(weight.sum())
    if total <= 0:
        return math.nan
    squared = ((output - clean) ** 2).sum(axis=-1)
    return float((squared * weight).sum() / (output.shape[-1] * total))


def masked_psnr(output: np.ndarray, clean: np.ndarray, weight: np.ndarray) -> float:
    """PSNR in dB in (-inf, 100] of the masked MSE; NaN for an empty region."""
    return psnr_from_mse(masked_mse(output, clean, weight))


def mse_ratio(rain_mse: float, background_mse: float) -> float:
    """Relative form: rain-region MSE / background MSE, in [0, inf).

    Above 1 means the error concentrates in the rain (rain left in). NaN when either region is
    empty or the background is reconstructed exactly (background MSE 0), where a ratio means
    nothing.
    """
    if math.isnan(rain_mse) or math.isnan(background_mse) or background_mse <= 0:
        return math.nan
    return rain_mse / background_mse


def image_scores(
    image: np.ndarray,
    clean: np.ndarray,
    rain: np.ndarray | None,
    threshold: float,
) -> dict[str, float]:
    """Every metric of one image (output or rainy input) against its clean reference.

    `image`, `clean`: HxWx3 in [0, 255]; `rain`: the rain layer HxW in [0, 255], or None when the
    suite has no masks (then only the whole-image scores are returned). Keys: psnr, psnr_y601,
    ssim, ssim_y601 and, with a rain layer, psnr_rain, psnr_bg, mse_ratio (binary mask
    R > threshold) and psnr_rain_soft, psnr_bg_soft, mse_ratio_soft (M = R/255).
    """
    scores = {
        "psnr": psnr(image, clean),
        "psnr_y601": psnr_y601(image, clean),
        "ssim": ssim(image, clean),
        "ssim_y601": ssim_y601(image, clean),
    }
    if rain is None:
        return scores
    for suffix, mask in (("", binary_mask(rain, threshold)), ("_soft", soft_mask(rain))):
        rain_mse = masked_mse(image, clean, mask)
        background_mse = masked_mse(image, clean, 1.0 - mask)
        scores[f"psnr_rain{suffix}"] = psnr_from_mse(rain_mse)
        scores[f"psnr_bg{suffix}"] = psnr_from_mse(background_mse)
        scores[f"mse_ratio{suffix}"] = mse_ratio(rain_mse, background_mse)
    return scores


# Scores where a gain (model minus rainy input) is reported; higher is better for all of them.
GAIN_METRICS = ("psnr", "psnr_y601", "ssim", "psnr_rain", "psnr_bg", "psnr_rain_soft", "psnr_bg_soft")


def output_and_input_scores(
    output: np.ndarray,
    rainy: np.ndarray,
    clean: np.ndarray,
    rain: np.ndarray | None,
    threshold: float,
) -> dict[str, float]:
    """Scores of the model output, of the rainy input (`<metric>_input`) and gains (`<metric>_gain`).

    All images HxWx3 in [0, 255]; `rain` HxW in [0, 255] or None. A gain is output score minus
    input score (dB for PSNR), NaN when either is NaN.
    """
    ours = image_scores(output, clean, rain, threshold)
    theirs = image_scores(rainy, clean, rain, threshold)
    row = dict(ours)
    row.update({f"{key}_input": value for key, value in theirs.items()})
    row.update({f"{key}_gain": ours[key] - theirs[key] for key in GAIN_METRICS if key in ours})
    return row


def image_set_scores(images: list[np.ndarray], suite, threshold: float) -> dict[str, float]:
    """Mean psnr, psnr_rain and psnr_bg (dB) of uint8 HxWx3 images against a suite's clean images.

    `suite` has `clean` (HxWx3 in [0, 255]) and `rain` (HxW in [0, 255]) lists in the order of
    `images` (pipeline.training.data.Suite): the training's validation curve, scored as evaluate
    scores (binary mask R > threshold).
    """
    scores: dict[str, list[float]] = {"psnr": [], "psnr_rain": [], "psnr_bg": []}
    for image, clean, rain in zip(images, suite.clean, suite.rain):
        mask = binary_mask(rain, threshold)
        scores["psnr"].append(psnr(image, clean))
        scores["psnr_rain"].append(masked_psnr(image, clean, mask))
        scores["psnr_bg"].append(masked_psnr(image, clean, 1.0 - mask))
    # An image without rain pixels has no rain-region score (NaN); it is left out of the mean.
    return {key: float(np.nanmean(values)) if np.isfinite(values).any() else math.nan for key, values in scores.items()}


def batch_psnr(output, target) -> np.ndarray:
    """Per-image PSNR (dB, capped at PSNR_CAP) of float32 NCHW tensors in [0, 1]: float64 (N,).

    The convention of ``psnr`` with peak 1.0 (module docstring); MSE = 0 scores PSNR_CAP."""
    mse = ((output.float() - target.float()) ** 2).flatten(1).mean(1).double().cpu().numpy()
    with np.errstate(divide="ignore"):
        return np.minimum(PSNR_CAP, 10.0 * np.log10(1.0 / np.maximum(mse, 1e-30)))
