"""Out-of-distribution rain generators (pipeline.synthesis.ood_rain): contract, determinism, masks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.synthesis.ood_rain import GENERATORS

NAMES = sorted(GENERATORS)


def _photo(seed: int = 0, size: int = 256) -> np.ndarray:
    """Smooth colour gradient + noise: uint8 size x size x 3."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.2 + 0.6 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * np.sin(6 * (xx + yy))], axis=-1)
    return np.clip(255 * base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def outputs():
    clean = _photo()
    return clean, {name: GENERATORS[name](clean, np.random.default_rng(7)) for name in NAMES}


def test_registry():
    assert NAMES == ["drops", "screen_streaks", "wind_streaks"]


@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_drawn(name, outputs):
    clean, results = outputs
    rainy, layer, drawn = results[name]
    assert rainy.shape == clean.shape and rainy.dtype == np.uint8
    assert layer.shape == clean.shape[:2] and layer.dtype == np.uint8
    assert layer.max() > 200  # the rain reaches near full intensity somewhere
    assert drawn["preset"] == name and "coverage" not in drawn
    assert all(type(v) in (int, float, str) for v in drawn.values())


@pytest.mark.parametrize("name", NAMES)
def test_odd_sizes(name):
    rainy, layer, _ = GENERATORS[name](_photo(1, 64)[:17, :40], np.random.default_rng(0))
    assert rainy.shape == (17, 40, 3) and layer.shape == (17, 40)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes_other_seed_differs(name):
    clean = _photo()
    before = clean.copy()
    a = GENERATORS[name](clean, np.random.default_rng(3))
    b = GENERATORS[name](clean, np.random.default_rng(3))
    c = GENERATORS[name](clean, np.random.default_rng(4))
    assert np.array_equal(clean, before)  # input not modified
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("name", NAMES)
def test_coverage_is_sane(name):
    clean = _photo()
    for seed in range(4):
        layer = GENERATORS[name](clean, np.random.default_rng(seed))[1]
        assert 0.005 <= np.mean(layer > 50) <= 0.40


@pytest.mark.parametrize("name", NAMES)
def test_rain_only_where_layer(name, outputs):
    clean, results = outputs
    rainy, layer, _ = results[name]
    assert np.array_equal(rainy[layer == 0], clean[layer == 0])
    changed = np.abs(rainy.astype(int) - clean).max(axis=2) > 10
    assert changed.sum() > 0.005 * changed.size
    assert np.mean(layer[changed] > 50) > 0.8  # visible changes sit mostly in the rain region (soft edges aside)
    diff = np.abs(rainy.astype(int) - clean).mean(axis=2)
    assert diff[layer > 50].mean() > 4 * max(diff[layer <= 50].mean(), 0.1)


def test_screen_never_darkens(outputs):
    clean, results = outputs
    rainy, layer, _ = results["screen_streaks"]
    assert np.all(rainy >= clean)
    white = GENERATORS["screen_streaks"](np.full((64, 64, 3), 255, np.uint8), np.random.default_rng(0))[0]
    assert np.all(white == 255)  # screen on white stays white (no saturating add)


def test_fixed_and_unknown_params():
    clean = _photo(size=64)
    _, _, drawn = GENERATORS["screen_streaks"](clean, np.random.default_rng(0), angle=10.0, length=20)
    assert drawn["angle"] == 10.0 and drawn["length"] == 20
    with pytest.raises(TypeError, match="unknown"):
        GENERATORS["drops"](clean, np.random.default_rng(0), nonsense=1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad, error",
    [
        (np.zeros((32, 32, 3), np.float32), TypeError),
        (np.zeros((32, 32), np.uint8), ValueError),
        (np.zeros((32, 32, 4), np.uint8), ValueError),
        (np.zeros((8, 32, 3), np.uint8), ValueError),
        ([[0, 0, 0]], TypeError),
    ],
)
def test_bad_input(name, bad, error):
    with pytest.raises(error, match="clean"):
        GENERATORS[name](bad, np.random.default_rng(0))
