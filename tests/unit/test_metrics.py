"""Metrics on cases with known answers, and against scikit-image where it defines the same thing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.evaluation import metrics as m


def _images(seed: int = 0, shape=(24, 32, 3)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(clean + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    return noisy, clean


# ----------------------------------------------------------------------------- PSNR
def test_psnr_known_value():
    clean = np.zeros((8, 8, 3))
    output = np.full((8, 8, 3), 10.0)  # MSE = 100
    assert m.psnr(output, clean) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert m.psnr(output.astype(np.uint8), clean.astype(np.uint8)) == pytest.approx(28.1308, abs=1e-4)


def test_psnr_identical_images_are_capped():
    _, clean = _images()
    assert m.psnr(clean, clean) == m.PSNR_CAP == 100.0
    assert m.psnr_y601(clean, clean) == 100.0
    assert m.psnr_from_mse(1e-12) == 100.0  # tiny errors do not exceed the cap either


def test_psnr_matches_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio

    noisy, clean = _images(1)
    assert m.psnr(noisy, clean) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=255), abs=1e-10)


def test_psnr_from_mse_keeps_nan():
    assert math.isnan(m.psnr_from_mse(math.nan))


def test_shape_mismatch_and_non_rgb_are_errors():
    with pytest.raises(ValueError, match="differ in shape"):
        m.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match="HxWx3"):
        m.psnr(np.zeros((4, 4)), np.zeros((4, 4)))


# ----------------------------------------------------------------------------- Y channel
def test_y601_known_values():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = m.rgb_to_y601(pixels)[0]
    assert y == pytest.approx([16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966])


def test_y601_matches_scikit_image_rgb2ycbcr():
    from skimage.color import rgb2ycbcr

    noisy, _ = _images(2)
    # scikit-image takes uint8 as [0, 1] floats and returns Y in [16, 235], as MATLAB does.
    assert np.allclose(m.rgb_to_y601(noisy), rgb2ycbcr(noisy)[..., 0], atol=1e-9)


def test_psnr_y601_is_1_32_db_above_full_range_luma():
    """The documented relationship: limited-range Y reads 20·log10(255/219) dB higher."""
    from skimage.color import rgb2yuv
    from skimage.metrics import peak_signal_noise_ratio

    noisy, clean = _images(3)
    full_range = peak_signal_noise_ratio(rgb2yuv(clean)[..., 0] * 255, rgb2yuv(noisy)[..., 0] * 255, data_range=255)
    difference = m.psnr_y601(noisy, clean) - full_range
    assert difference == pytest.approx(20 * math.log10(255 / 219), abs=1e-9)
    assert difference == pytest.approx(1.32, abs=0.005)
    # and the key's definition is the limited-range one: it equals PSNR of skimage's Y, peak 255
    from skimage.color import rgb2ycbcr

    limited = peak_signal_noise_ratio(rgb2ycbcr(clean)[..., 0], rgb2ycbcr(noisy)[..., 0], data_range=255)
    assert m.psnr_y601(noisy, clean) == pytest.approx(limited, abs=1e-9)


# ----------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one_and_constant_images_known():
    _, clean = _images(4)
    assert m.ssim(clean, clean) == pytest.approx(1.0)
    assert m.ssim_y601(clean, clean) == pytest.approx(1.0)
    # Flat images: variances are 0, so SSIM is the luminance term (2·μx·μy + C1) / (μx² + μy² + C1).
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 110 + c1) / (100**2 + 110**2 + c1)
    assert m.ssim(np.full((16, 16, 3), 100.0), np.full((16, 16, 3), 110.0)) == pytest.approx(expected)


def test_ssim_rgb_is_mean_of_channels_and_drops_with_noise():
    noisy, clean = _images(5)
    per_channel = [m._ssim(noisy[..., c].astype(float), clean[..., c].astype(float), None) for c in range(3)]
    assert m.ssim(noisy, clean) == pytest.approx(np.mean(per_channel))
    assert 0 < m.ssim(noisy, clean) < 0.99


def test_ssim_rejects_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        m.ssim(np.zeros((8, 40, 3)), np.zeros((8, 40, 3)))


# ----------------------------------------------------------------------------- masks
def _masked_case():
    clean = np.zeros((4, 4, 3))
    output = clean.copy()
    output[0, 0] = 10.0  # 3 channels x 100 = 300 squared error
    output[3, 3, 0] = 20.0  # 400 squared error
    return output, clean


def test_binary_and_soft_masks():
    rain = np.array([[0, 50, 51, 255]], dtype=np.uint8)
    assert m.binary_mask(rain, 50).tolist() == [[0, 0, 1, 1]]  # strictly above the threshold
    assert m.soft_mask(rain) == pytest.approx(np.array([[0, 50 / 255, 51 / 255, 1.0]]))


def test_masked_psnr_binary_known_values():
    output, clean = _masked_case()
    mask = np.zeros((4, 4))
    mask[0, :2] = 1  # two rain pixels: (0,0) with error and (0,1) without
    assert m.masked_mse(output, clean, mask) == pytest.approx(300 / (3 * 2))
    assert m.masked_psnr(output, clean, mask) == pytest.approx(10 * math.log10(255**2 / 50))
    assert m.masked_mse(output, clean, 1 - mask) == pytest.approx(400 / (3 * 14))


def test_masked_mse_soft_weights_known_values():
    output, clean = _masked_case()
    weight = np.zeros((4, 4))
    weight[0, 0] = 0.5
    assert m.masked_mse(output, clean, weight) == pytest.approx(0.5 * 300 / (3 * 0.5))
    assert m.masked_mse(output, clean, 1 - weight) == pytest.approx((0.5 * 300 + 400) / (3 * 15.5))


def test_empty_region_gives_nan_not_an_error():
    output, clean = _masked_case()
    assert math.isnan(m.masked_psnr(output, clean, np.zeros((4, 4))))
    assert math.isnan(m.masked_psnr(output, clean, 1 - np.ones((4, 4))))


def test_mask_shape_mismatch_is_an_error():
    output, clean = _masked_case()
    with pytest.raises(ValueError, match="mask shape"):
        m.masked_mse(output, clean, np.ones((4, 5)))


def test_mse_ratio():
    assert m.mse_ratio(40.0, 10.0) == 4.0
    assert math.isnan(m.mse_ratio(40.0, 0.0))
    assert math.isnan(m.mse_ratio(math.nan, 10.0))


# ----------------------------------------------------------------------------- per-image rows
def test_image_scores_keys_with_and_without_rain():
    noisy, clean = _images(6)
    assert set(m.image_scores(noisy, clean, None, 50)) == {"psnr", "psnr_y601", "ssim", "ssim_y601"}
    rain = np.zeros(clean.shape[:2], np.uint8)
    rain[:, :5] = 200
    scores = m.image_scores(noisy, clean, rain, 50)
    assert {"psnr_rain", "psnr_bg", "mse_ratio", "psnr_rain_soft", "psnr_bg_soft", "mse_ratio_soft"} <= set(scores)


def test_output_and_input_scores_gain_over_input():
    """Rain added in columns 0..4; an output that removed it exactly scores the 100 dB cap there."""
    rng = np.random.default_rng(7)
    clean = rng.integers(0, 50, (16, 16, 3)).astype(np.uint8)
    rain = np.zeros((16, 16), np.uint8)
    rain[:, :5] = 200
    rainy = clean + rain[..., None]
    row = m.output_and_input_scores(clean, rainy, clean, rain, 50)
    expected_input = 10 * math.log10(255**2 / 200**2)  # every rain pixel is off by 200 in each channel
    assert row["psnr_rain_input"] == pytest.approx(expected_input)
    assert row["psnr_rain_soft_input"] == pytest.approx(expected_input)  # uniform R: soft = binary
    assert row["psnr_rain"] == 100.0
    assert row["psnr_rain_gain"] == pytest.approx(100.0 - expected_input)
    assert row["psnr_bg_input"] == 100.0 and row["psnr_bg_gain"] == 0.0
    assert math.isnan(row["mse_ratio_input"])  # background exact: a ratio means nothing
    unchanged = m.output_and_input_scores(rainy, rainy, clean, rain, 50)
    assert all(unchanged[f"{key}_gain"] == 0.0 for key in m.GAIN_METRICS)
