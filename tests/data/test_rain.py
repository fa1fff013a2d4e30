"""The rain engine (pipeline.synthesis.rain): recipe fidelity, determinism, ranges, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from pipeline.config import PRESETS, RainConfig
from pipeline.seeds import torch_generator
from pipeline.synthesis import cpu_kernels
from pipeline.synthesis.rain import (
    _KERNEL_CACHE,
    _NEGLIGIBLE_WEIGHT,
    PRESET_CONFIGS,
    RainDraw,
    _composite,
    _draw_seeds,
    _normalize,
    _reflect101_copies,
    _render_on_cpu,
    _stamp,
    _stamp_positions,
    _sparse_kernels,
    coverage,
    draw_rain_params,
    measure_streak_angle,
    rainify_batch,
    render_rain_layers,
    resolve_rain,
    streak_kernels,
    synthesize_rain,
)
from tests.conftest import textured_photo

# OpenCV's warpAffine of a 6×6 identity matrix by getRotationMatrix2D((3, 3), 0 - 45, 1): the
# recipe's un-blurred streak kernel for length 6, angle 0 (values read from OpenCV 4).
OPENCV_LINE_6_ANGLE_0 = np.array(
    [
        [0, 0, 39 / 512, 25 / 32, 39 / 512, 0],
        [0, 0, 0, 265 / 512, 0, 0],
        [0, 0, 0, 305 / 512, 0, 0],
        [0, 0, 81 / 1024, 1, 81 / 1024, 0],
        [0, 0, 0, 305 / 512, 0, 0],
        [0, 0, 0, 265 / 512, 0, 0],
    ]
)
SEED_SMOOTHING = torch.tensor([[0.0, 0.1, 0.0], [0.1, 8.0, 0.1], [0.0, 0.1, 0.0]])


def custom(**overrides) -> RainConfig:
    fields = dict(amount=(0.006, 0.006), width=[3], length=(35, 35), angle=[(0, 0)], beta=(0.8, 0.8))
    fields.update(overrides)
    return RainConfig(**fields)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared 2-core machine waiting
    OpenMP threads slow every op down many times over (benchmarks/README.md)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def photo() -> np.ndarray:
    return textured_photo(np.random.default_rng(3), 72, 88)


def test_presets_match_the_config_names_and_the_method_table():
    assert tuple(PRESET_CONFIGS) == PRESETS
    assert PRESET_CONFIGS["medium"].width == [3, 5, 7]
    assert PRESET_CONFIGS["medium"].width_probs == [0.25, 0.5, 0.25]
    assert PRESET_CONFIGS["large"].length == (45, 55)
    assert PRESET_CONFIGS["random"].angle == [(-60, 60)]


def test_synthesize_rain_shapes_dtypes_ranges_and_input_untouched(photo):
    before = photo.copy()
    rainy, layer, drawn = synthesize_rain(photo, ["medium"], seed=7)
    assert rainy.shape == photo.shape and rainy.dtype == np.uint8
    assert layer.shape == photo.shape[:2] and layer.dtype == np.uint8
    assert layer.max() == 255  # min-max normalization: the brightest streak is 255
    assert np.array_equal(photo, before)
    assert set(drawn) == {"preset", "amount", "width", "length", "angle", "beta"}
    assert drawn["preset"] == "medium" and drawn["width"] in (3, 5, 7)
    assert 35 <= drawn["length"] <= 45 and -30 <= drawn["angle"] <= 30
    assert 0.005 <= drawn["amount"] <= 0.007 and 0.7 <= drawn["beta"] <= 1.0
    # The saturating add, with OpenCV's rounding.
    expected = np.clip(np.rint(photo.astype(np.float32) + np.float32(drawn["beta"]) * layer[..., None]), 0, 255)
    assert np.abs(rainy.astype(int) - expected.astype(int)).max() <= 1


def test_rainify_batch_shapes_ranges_and_input_untouched():
    clean = torch.rand(4, 3, 40, 56)
    before = clean.clone()
    rainy, layers = rainify_batch(clean, ["small", "large"], 1.0, torch.Generator().manual_seed(0))
    assert rainy.shape == clean.shape and rainy.dtype == torch.float32
    assert layers.shape == (4, 1, 40, 56) and layers.dtype == torch.float32
    assert float(rainy.min()) >= 0 and float(rainy.max()) <= 1
    assert float(layers.min()) == 0 and float(layers.max()) == 255
    assert torch.equal(layers, layers.floor())
    assert torch.equal(clean, before)
    assert bool((rainy >= clean - 1e-6).all())  # rain only adds light


def test_same_seed_same_rain_different_seed_different_rain(photo):
    first = synthesize_rain(photo, ["random"], seed=11)
    again = synthesize_rain(photo, ["random"], seed=11)
    other = synthesize_rain(photo, ["random"], seed=12)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    assert not np.array_equal(first[1], other[1])

    clean = torch.rand(3, 3, 32, 32)
    a = rainify_batch(clean, ["medium"], 1.0, torch.Generator().manual_seed(5))
    b = rainify_batch(clean, ["medium"], 1.0, torch.Generator().manual_seed(5))
    c = rainify_batch(clean, ["medium"], 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_a_generator_gives_a_fresh_pattern_every_call_and_per_worker_streams_differ():
    clean = torch.rand(2, 3, 32, 32)
    generator = torch.Generator().manual_seed(1)
    first = rainify_batch(clean, ["medium"], 1.0, generator)[1]
    second = rainify_batch(clean, ["medium"], 1.0, generator)[1]
    assert not torch.equal(first, second)
    worker0 = rainify_batch(clean, ["medium"], 1.0, torch_generator(1234, "train", "rain", 0, 0))[1]
    worker1 = rainify_batch(clean, ["medium"], 1.0, torch_generator(1234, "train", "rain", 0, 1))[1]
    epoch1 = rainify_batch(clean, ["medium"], 1.0, torch_generator(1234, "train", "rain", 1, 0))[1]
    assert not torch.equal(worker0, worker1) and not torch.equal(worker0, epoch1)


def test_probability_leaves_some_samples_clean_with_empty_layers():
    clean = torch.rand(32, 3, 24, 24)
    rainy, layers = rainify_batch(clean, ["small"], 0.5, torch.Generator().manual_seed(2))
    has_rain = layers.flatten(1).amax(1) > 0
    assert 0 < int(has_rain.sum()) < 32
    assert torch.equal(rainy[~has_rain], clean[~has_rain])
    none, empty = rainify_batch(clean, ["small"], 0.0, torch.Generator().manual_seed(2))
    assert torch.equal(none, clean) and float(empty.abs().sum()) == 0


def test_angle_zero_gives_vertical_streaks_and_orientation_follows_the_angle(photo):
    for angle in (0, -45, -20, 15, 40, 60):
        _, layer, drawn = synthesize_rain(photo, [custom(angle=[(angle, angle)], width=[1])], seed=3)
        assert drawn["angle"] == angle
        assert measure_streak_angle(layer) == pytest.approx(angle, abs=4.0)
    _, vertical, _ = synthesize_rain(photo, [custom(width=[1])], seed=3)
    # Vertical streaks: intensity varies across columns far more than down the rows.
    assert np.abs(np.diff(vertical.astype(float), axis=1)).mean() > 3 * np.abs(np.diff(vertical.astype(float), axis=0)).mean()


def test_width_one_is_a_no_op_blur_and_the_kernel_is_opencvs():
    kernels, pad = streak_kernels(torch.tensor([6, 6]), torch.tensor([0, 0]), torch.tensor([1, 3]))
    assert pad == 4
    # Canvas position q holds kernel index 6//2 + pad - q: the flipped kernel sits in [2, 8).
    placed = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    placed[0, 0, 2:8, 2:8] = torch.from_numpy(OPENCV_LINE_6_ANGLE_0[::-1, ::-1].copy())
    expected = torch.nn.functional.conv2d(placed, SEED_SMOOTHING.double()[None, None], padding=1)[0, 0]
    assert torch.allclose(kernels[0].double(), expected, atol=1e-5)
    assert not torch.allclose(kernels[1].double(), expected, atol=1e-3)  # width 3 does blur


def test_coverage_per_preset_within_the_documented_bands():
    # method.md: coverage of R > 50 at 128² is ≈13% small, ≈35% medium, ≈63% large, ≈32% random.
    documented = {"small": (0.13, 0.03), "medium": (0.35, 0.05), "large": (0.63, 0.05), "random": (0.32, 0.07)}
    clean = torch.full((24, 3, 128, 128), 0.4)
    for preset, (centre, band) in documented.items():
        _, layers = rainify_batch(clean, [preset], 1.0, torch_generator(0, "coverage", preset))
        measured = float((layers > 50).float().mean())
        assert abs(measured - centre) < band, f"{preset}: coverage {measured:.3f}, documented ≈{centre}"


def test_saturating_add_clips_at_255():
    bright = np.full((48, 48, 3), 240, dtype=np.uint8)
    rainy, layer, drawn = synthesize_rain(bright, ["large"], seed=4)
    assert rainy.max() == 255
    streak = layer > 100
    assert (rainy[streak] == 255).all()  # 240 + beta·R > 255 is clipped, never wrapped
    assert (rainy[layer == 0] == 240).all()
    white = torch.ones(2, 3, 32, 32)
    assert torch.equal(rainify_batch(white, ["large"], 1.0, torch.Generator().manual_seed(0))[0], white)


def test_disjoint_angle_ranges_draw_only_inside_them_and_from_each():
    entry = custom(angle=[(-60, -30), (30, 60)])
    draw = draw_rain_params([entry], 400, torch.Generator().manual_seed(0), "cpu")
    angles = draw.angle.numpy()
    assert ((angles >= -60) & (angles <= -30) | (angles >= 30) & (angles <= 60)).all()
    assert (angles < 0).sum() > 100 and (angles > 0).sum() > 100


def test_one_entry_drawn_per_sample_with_its_own_ranges():
    draw = draw_rain_params(resolve_rain(["small", "large"]), 300, torch.Generator().manual_seed(0), "cpu")
    small = draw.entry == 0
    assert 0 < int(small.sum()) < 300
    assert bool((draw.length[small] <= 35).all()) and bool((draw.length[~small] >= 45).all())
    assert set(draw.width[small].tolist()) == {1, 3} and set(draw.width[~small].tolist()) == {7, 9}


def test_banded_fft_rendering_equals_one_pass():
    entry = resolve_rain(["large"])
    draw = draw_rain_params(entry, 1, torch.Generator().manual_seed(3), "cpu")
    noise = torch.rand(1, 1, 150, 70, generator=torch.Generator().manual_seed(4))
    whole = render_rain_layers(noise, draw, method="fft")
    banded = render_rain_layers(noise, draw, band_pixels=3000, method="fft")  # ~20-row bands
    assert (whole - banded).abs().max() <= 1


@pytest.mark.parametrize("height, width", [(64, 64), (40, 97), (9, 5), (1, 30)])
def test_stamping_and_fft_convolution_agree_on_the_same_noise(height, width):
    # Stamping covers the reflect-101 borders with mirrored seeds (several reflections when the
    # image is smaller than the kernel) and drops kernel entries below 1/500 of the peak.
    generator = torch.Generator().manual_seed(height * 1000 + width)
    draw = draw_rain_params(resolve_rain(list(PRESETS)), 8, generator, "cpu")
    noise = torch.rand(8, 1, height, width, generator=generator)
    before = noise.clone()
    stamped = render_rain_layers(noise, draw, method="sparse")
    convolved = render_rain_layers(noise, draw, method="fft")
    assert torch.equal(noise, before)  # the noise is not modified
    assert stamped.shape == (8, 1, height, width) and stamped.dtype == torch.float32
    assert (stamped - convolved).abs().max() <= 1
    assert float((stamped != convolved).float().mean()) < 0.05
    assert torch.equal(render_rain_layers(noise, draw), stamped)  # auto picks stamping here


@pytest.mark.parametrize("height,width", [(3, 5), (17, 64), (64, 64), (96, 40)])
def test_compiled_cpu_rendering_equals_the_torch_stamping(height, width):
    # CUDA runs the torch ops (_stamp_positions, _stamp, _normalize); CPU the compiled loop.
    generator = torch.Generator().manual_seed(height * 7 + width)
    draw = draw_rain_params(resolve_rain(list(PRESETS)), 12, generator, "cpu")
    seeds = _draw_seeds(draw.amount * 4, height, width, generator)  # denser: many border seeds
    kernels = _sparse_kernels(draw.length, draw.angle, draw.width)
    expected = _normalize(_stamp(_stamp_positions(seeds, kernels, height, width), kernels, height, width))
    compiled = _render_on_cpu(seeds, torch.bincount(seeds.sample, minlength=12), kernels, height, width)
    assert compiled.shape == expected.shape == (12, height, width)
    # Float sums in another order: a level may flip where a value sits on an integer.
    assert (compiled - expected).abs().max() <= 1
    assert float((compiled != expected).float().mean()) < 0.01


@pytest.mark.parametrize("size", [1, 2, 3, 8, 64])
@pytest.mark.parametrize("reach", [0, 1, 5, 30])
def test_compiled_mirror_images_match_the_reflect101_table(size, reach):
    table = _reflect101_copies(size, reach, "cpu").numpy()
    found = np.empty(size + 2 * reach + 1, dtype=np.int64)
    for index in range(size):
        count = cpu_kernels._reflect101_images(index, size, reach, found)
        assert sorted(found[:count].tolist()) == sorted(int(p) for p in table[:, index] if p > -(1 << 39))


def test_compiled_composite_equals_torch_and_checks_the_range():
    generator = torch.Generator().manual_seed(5)
    clean = torch.rand(3, 3, 9, 11, generator=generator)
    layers = torch.randint(0, 256, (3, 1, 9, 11), generator=generator).float()
    weight = torch.tensor([0.0, 0.7 / 255, 1.0 / 255])
    expected = torch.addcmul(clean, layers, weight.view(3, 1, 1, 1)).clamp(0, 1)
    assert torch.allclose(_composite(clean, layers, weight), expected, atol=1e-6)
    assert torch.equal(_composite(clean.double(), layers, weight), _composite(clean, layers, weight))
    for bad in (float("nan"), -0.1, 1.5):
        broken = clean.clone()
        broken[1, 2, 4, 5] = bad
        with pytest.raises(ValueError, match=r"clean values must lie in \[0,1\]"):
            _composite(broken, layers, weight)


def test_unknown_render_method_is_rejected():
    draw = draw_rain_params(resolve_rain(["small"]), 1, torch.Generator().manual_seed(0), "cpu")
    with pytest.raises(ValueError, match="method must be one of auto, sparse, fft"):
        render_rain_layers(torch.rand(1, 1, 8, 8), draw, method="dense")


def test_seeds_drawn_as_survivors_match_the_thresholded_uniform_field():
    # Each pixel survives independently with probability `amount`, valued U[256·(1 - amount), 256).
    amount = torch.tensor([0.0, 0.004, 0.05, 1.0], dtype=torch.float64)
    height, width, draws = 30, 50, 400
    generator = torch.Generator().manual_seed(0)
    hits = torch.zeros(4, height * width)
    values = [[] for _ in amount]
    for _ in range(draws):
        seeds = _draw_seeds(amount, height, width, generator)
        key = (seeds.sample * height + seeds.row) * width + seeds.col
        assert bool((key[1:] > key[:-1]).all())  # ordered by sample then raster position, no repeats
        hits.index_put_((seeds.sample, seeds.row * width + seeds.col), torch.ones(len(key)), accumulate=True)
        for i in range(4):
            values[i].append(seeds.value[seeds.sample == i])
    share = hits.mean(1) / draws
    assert share[0] == 0 and share[3] == 1
    assert abs(float(share[1]) - 0.004) < 0.0006 and abs(float(share[2]) - 0.05) < 0.002  # ~5 standard errors
    assert float(hits[2].std() / draws) < 0.02  # no pixel favoured (binomial sd ≈ 0.011)
    for i, fraction in ((1, 0.004), (2, 0.05), (3, 1.0)):
        seen = torch.cat(values[i])
        low = 256 * (1 - fraction)
        assert float(seen.min()) >= low - 1e-3 and float(seen.max()) < 256
        assert float(seen.mean()) == pytest.approx((low + 256) / 2, abs=(256 - low) * 0.05 + 1e-3)


def test_stamp_kernels_are_the_streak_kernels_without_negligible_entries():
    length, angle, width = torch.tensor([30, 45, 7]), torch.tensor([-25, 60, 0]), torch.tensor([3, 9, 1])
    dense, pad = streak_kernels(length, angle, width)
    _KERNEL_CACHE.clear()
    for _ in ("built", "from the cache"):
        kept = 0
        for kernel, full in zip(_sparse_kernels(length, angle, width), dense):
            rebuilt = torch.zeros_like(full)
            rebuilt[kernel.dy.long() + pad, kernel.dx.long() + pad] = kernel.weight
            assert float((rebuilt - full).abs().max()) <= _NEGLIGIBLE_WEIGHT * float(full.abs().max())
            assert kernel.size == len(kernel.weight)
            assert kernel.reach_y == int(kernel.dy.abs().max()) and kernel.reach_x == int(kernel.dx.abs().max())
            kept += kernel.size
        assert kept < 0.9 * int((dense != 0).sum())
        assert len(_KERNEL_CACHE) == 3


def test_dense_custom_amounts_take_the_fft_path():
    dense = custom(amount=(0.3, 0.4), width=[5])
    clean = torch.full((2, 3, 48, 40), 0.2)
    generator = torch.Generator().manual_seed(0)
    rainy, layers = rainify_batch(clean, [dense], 1.0, generator)
    assert float(layers.max()) == 255 and float((layers > 50).float().mean()) > 0.3
    assert bool((rainy >= clean).all())
    draw = draw_rain_params([dense], 2, generator, "cpu")
    noise = torch.rand(2, 1, 48, 40, generator=generator)
    assert torch.equal(render_rain_layers(noise, draw), render_rain_layers(noise, draw, method="fft"))


def test_images_smaller_than_the_kernel_work():
    rainy, layer, _ = synthesize_rain(np.zeros((9, 5, 3), np.uint8), ["large"], seed=0)
    assert rainy.shape == (9, 5, 3) and layer.shape == (9, 5)


def test_haze_extra_is_opt_in():
    photo = np.full((40, 40, 3), 60, np.uint8)
    hazy = custom(extras=[{"type": "haze", "strength": (0.3, 0.3), "airlight": (1.0, 1.0)}])
    rainy, layer, drawn = synthesize_rain(photo, [hazy], seed=1)
    assert drawn["haze"] == pytest.approx(0.3) and drawn["airlight"] == pytest.approx(1.0)
    assert (rainy[layer == 0] == round(60 * 0.7 + 0.3 * 255)).all()
    assert "haze" not in synthesize_rain(photo, ["small"], seed=1)[2]


def test_coverage_and_angle_measurements():
    layer = np.zeros((20, 20), np.uint8)
    layer[:, 5:8] = 200
    assert coverage(layer, 50) == pytest.approx(3 / 20)
    assert measure_streak_angle(layer) == pytest.approx(0, abs=1e-6)
    assert np.isnan(measure_streak_angle(np.zeros((5, 5))))


@pytest.mark.parametrize(
    "fields, parameter",
    [
        (dict(amount=(0.2, 1.5)), "amount"),
        (dict(amount=(0.3, 0.1)), "amount"),
        (dict(width=[4]), "width"),
        (dict(width=[-1]), "width"),
        (dict(width=[1, 3], width_probs=[1.0]), "width_probs"),
        (dict(length=(30, 20)), "length"),
        (dict(angle=[(10, -10)]), "angle"),
        (dict(angle=[(-60, 0), (-10, 40)]), "angle"),
        (dict(beta=(0.9, 0.7)), "beta"),
        (dict(colour=3), "colour"),
    ],
)
def test_bad_custom_configs_name_the_parameter(fields, parameter):
    with pytest.raises(ValidationError, match=parameter):
        custom(**fields)


def test_bad_inputs_raise_clear_errors(photo):
    with pytest.raises(ValueError, match="unknown rain preset 'huge'.*small, medium, large, random"):
        synthesize_rain(photo, ["huge"], seed=0)
    with pytest.raises(ValueError, match="non-empty list"):
        synthesize_rain(photo, "small", seed=0)
    with pytest.raises(TypeError, match="uint8"):
        synthesize_rain(photo.astype(np.float32), ["small"], seed=0)
    with pytest.raises(ValueError, match="HxWx3"):
        synthesize_rain(photo[..., :2], ["small"], seed=0)
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        rainify_batch(torch.full((1, 3, 8, 8), 2.0), ["small"], 1.0, generator)
    with pytest.raises(ValueError, match="3 channels"):
        rainify_batch(torch.rand(1, 1, 8, 8), ["small"], 1.0, generator)
    with pytest.raises(TypeError, match="float32"):
        rainify_batch(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["small"], 1.0, generator)
    with pytest.raises(ValueError, match="probability"):
        rainify_batch(torch.rand(1, 3, 8, 8), ["small"], 1.5, generator)


def test_draw_rows_report_plain_values():
    draw = draw_rain_params(resolve_rain(["small"]), 2, torch.Generator().manual_seed(0), "cpu")
    assert isinstance(draw, RainDraw)
    row = draw.row(1, resolve_rain(["small"]))
    assert type(row["width"]) is int and type(row["amount"]) is float and row["preset"] == "small"
