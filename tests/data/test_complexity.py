"""Complexity measures on images with known answers: flat, noise, stripes, pure colour."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.curation.complexity import (
    MEASURE_FUNCTIONS,
    MEASURE_RANGES,
    MEASURES,
    colorfulness,
    entropy,
    gradient,
    laplacian,
    measure_all,
    png_bpp,
)


def flat(value: int = 120, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


def stripes(width: int, size: int = 64) -> np.ndarray:
    """Vertical black/white stripes `width` px wide, uint8 (size, size, 3)."""
    columns = (np.arange(size) // width) % 2 * 255
    return np.repeat(np.tile(columns.astype(np.uint8), (size, 1))[..., None], 3, axis=-1)


def grey_noise(size: int = 256, seed: int = 0) -> np.ndarray:
    levels = np.random.default_rng(seed).integers(0, 256, (size, size, 1), dtype=np.uint8)
    return np.repeat(levels, 3, axis=-1)


def test_flat_image_scores_zero():
    values = measure_all(flat())
    for name in ("gradient", "laplacian", "entropy", "colorfulness"):
        assert values[name] == 0.0, name
    assert 0 < values["png_bpp"] < 1  # only the PNG container overhead remains


def test_one_pixel_stripes_have_known_answers():
    image = stripes(1)
    assert float(gradient(image)) == pytest.approx(255.0)
    # The Laplacian is ±2·255 everywhere (left and right neighbours are the other colour).
    assert float(laplacian(image)) == pytest.approx(510.0**2)
    assert float(entropy(image)) == pytest.approx(1.0)
    assert float(colorfulness(image)) == 0.0


def test_wider_stripes_count_their_edges():
    # 4-px stripes on 64 columns: 15 of the 63 forward differences cross an edge.
    assert float(gradient(stripes(4))) == pytest.approx(255.0 * 15 / 63)
    assert float(gradient(stripes(4))) < float(gradient(stripes(2))) < float(gradient(stripes(1)))


def test_noise_is_maximally_complex():
    noise = grey_noise()
    assert float(entropy(noise)) == pytest.approx(8.0, abs=0.01)
    rgb_noise = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert float(png_bpp(rgb_noise)) == pytest.approx(24.0, abs=0.5)  # incompressible
    ramp = np.repeat(np.tile(np.linspace(0, 255, 256).astype(np.uint8), (256, 1))[..., None], 3, axis=-1)
    for name in ("gradient", "laplacian", "png_bpp"):
        smooth, busy = MEASURE_FUNCTIONS[name](ramp), MEASURE_FUNCTIONS[name](noise)
        assert float(smooth) < float(busy), name
    # Entropy sees only the histogram, not where the values are: a full ramp scores like noise.
    assert float(entropy(ramp)) == pytest.approx(8.0)


def test_colorfulness_known_values():
    red = np.zeros((8, 8, 3), dtype=np.uint8)
    red[..., 0] = 255
    assert float(colorfulness(red)) == pytest.approx(0.3 * np.hypot(255.0, 127.5))
    assert float(colorfulness(grey_noise(32))) == 0.0


def test_values_stay_in_documented_ranges():
    rng = np.random.default_rng(2)
    images = [flat(0, 16), flat(255, 16), stripes(1, 16), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)]
    for image in images:
        for name, value in measure_all(image).items():
            low, high = MEASURE_RANGES[name]
            assert low <= float(value) <= high, (name, float(value))


def test_stacks_give_one_value_per_image():
    rng = np.random.default_rng(3)
    stack = rng.integers(0, 256, (2, 3, 20, 24, 3), dtype=np.uint8)
    values = measure_all(stack)
    assert set(values) == set(MEASURES)
    for name, batch in values.items():
        assert batch.shape == (2, 3)
        assert batch[1, 2] == pytest.approx(float(measure_all(stack[1, 2])[name]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="uint8 RGB"):
        gradient(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        entropy(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="too small"):
        laplacian(np.zeros((2, 8, 3), dtype=np.uint8))


def test_every_measure_the_params_allow_is_implemented_in_their_column_order():
    """curate.complexity is validated against params/curate.py's names (the schema imports no
    curation code); the curation implements exactly those, in that order (the tables' columns)."""
    from pipeline.curation.complexity import MEASURE_FUNCTIONS, MEASURES
    from pipeline.params.curate import COMPLEXITY_MEASURES

    assert tuple(MEASURE_FUNCTIONS) == COMPLEXITY_MEASURES == MEASURES
