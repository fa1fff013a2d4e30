"""Tiled inference: full coverage, seamless blending, bounded memory, batching."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.inference import blend_weights, derain_array, derain_batch, tile_starts
from tests.fakes import Identity


class Blur(nn.Module):
    """5x5 box blur with replicated borders: its output depends on context, so tile borders differ."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
        return nn.functional.avg_pool2d(padded, 5, stride=1)


class Inverter(nn.Module):
    """1 − x: exact and position-independent, so any tiling must reproduce it exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.0 - x


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("tile,overlap", [(64, 0), (64, 8), (64, 32), (100, 17)])
def test_tile_starts_cover_the_image_with_the_requested_overlap(tile, overlap):
    for length in range(1, 700, 7):
        starts = tile_starts(length, tile, overlap)
        size = min(tile, length)
        assert starts[0] == 0 and starts[-1] + size == length
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours overlap enough
        assert starts == sorted(set(starts))


def test_blend_weights_sum_to_one_everywhere():
    for length, tile, overlap in [(300, 64, 16), (129, 64, 32), (64, 64, 8), (1000, 128, 0)]:
        starts = tile_starts(length, tile, overlap)
        total = np.zeros(length)
        for start, weight in zip(starts, blend_weights(starts, tile, length, overlap)):
            total[start : start + len(weight)] += weight
        assert np.allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 56), (64, 64), (150, 97), (300, 70)])
def test_exact_model_is_reproduced_exactly_whatever_the_tiling(shape):
    image = _image(*shape)
    model = Identity()
    assert np.array_equal(derain_array(model, image, tile=64, overlap=16), image)
    assert all(h <= 64 and w <= 64 for _, _, h, w in model.shapes)  # never more than one tile at once
    assert np.array_equal(derain_array(Inverter(), image, tile=64, overlap=16), 255 - image)


def test_overlap_blending_hides_tile_seams():
    """A context-dependent model: tiled output stays closer to the whole-image output with overlap."""
    image = _image(192, 192, seed=1)
    whole = derain_array(Blur(), image, tile=256).astype(float)
    hard = np.abs(derain_array(Blur(), image, tile=64, overlap=0) - whole)
    blended = np.abs(derain_array(Blur(), image, tile=64, overlap=16) - whole)
    assert hard.max() > 10  # seams: a tile border sees replicated pixels, not its neighbours
    assert blended.mean() < hard.mean() / 3
    assert blended.max() < hard.max()


def test_memory_beyond_the_image_stays_a_few_strips():
    """Extra numpy memory is bounded by strips of `tile` rows, not by the image size."""
    image = _image(1024, 1024, seed=2)
    tile = 128
    tracemalloc.start()
    try:
        output = derain_array(Identity(), image, tile=tile, overlap=16)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(output, image)
    strip = tile * image.shape[1] * 3 * 4  # one float32 strip: 1.6 MB
    full_float_accumulator = image.size * 4  # what an untiled float32 buffer would cost: 12.6 MB
    assert peak < output.nbytes + 5 * strip < output.nbytes + full_float_accumulator


def test_derain_batch_batches_small_images_and_matches_single_calls():
    images = np.stack([_image(48, 40, seed=s) for s in range(7)])
    model = Identity()
    result = derain_batch(model, images, batch_size=3)
    assert np.array_equal(result, images)
    assert [shape[0] for shape in model.shapes] == [3, 3, 1]
    single = np.stack([derain_array(Inverter(), image) for image in images])
    assert np.array_equal(derain_batch(Inverter(), images, batch_size=4), single)


def test_derain_batch_tiles_large_images():
    images = np.stack([_image(90, 130, seed=s) for s in range(2)])
    model = Identity()
    assert np.array_equal(derain_batch(model, images, batch_size=8, tile=64, overlap=8), images)
    assert all(shape[0] == 1 and shape[2] <= 64 and shape[3] <= 64 for shape in model.shapes)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        derain_array(Identity(), np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="overlap"):
        derain_array(Identity(), _image(8, 8), tile=64, overlap=40)

    class Shrinks(nn.Module):
        def forward(self, x):
            return x[..., :-1]

    with pytest.raises(ValueError, match="keep the shape"):
        derain_array(Shrinks(), _image(8, 8))
