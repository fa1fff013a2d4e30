"""Perceptual-hash dedupe: exact, resized and recompressed copies are caught; distinct photos kept."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from pipeline.curation.dedupe import dedupe, hamming, near_duplicate_groups, perceptual_hash


def random_scene(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """A smooth random colour field plus fine noise: uint8 (height, width, 3), distinct per seed."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8))
    field = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.float64)
    return np.clip(field + rng.normal(0, 8, field.shape), 0, 255).astype(np.uint8)


def resized(image: np.ndarray, scale: float) -> np.ndarray:
    height, width = image.shape[:2]
    size = (round(width * scale), round(height * scale))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_copies_are_grouped_with_their_original_and_the_largest_is_kept():
    original = random_scene(0)
    copies = {
        "b-exact": original.copy(),
        "c-half": resized(original, 0.5),
        "d-jpeg": jpeg(original, 60),
        "e-small-jpeg": jpeg(resized(original, 0.6), 50),
    }
    distinct = {f"z-other{i}": random_scene(10 + i) for i in range(5)}
    images = {"a-original": original, **copies, **distinct}
    ids = list(images)
    hashes = [perceptual_hash(images[i]) for i in ids]
    pixels = [images[i].shape[0] * images[i].shape[1] for i in ids]

    kept, removed = dedupe(ids, hashes, pixels, max_distance=6)

    # "a-original" and "b-exact" tie on size: the smaller id wins.
    assert kept == ["a-original", *sorted(distinct)]
    assert [row["image_id"] for row in removed] == sorted(copies)
    assert all(row["duplicate_of"] == "a-original" and row["distance"] <= 6 for row in removed)


def test_distinct_photos_are_all_kept():
    images = [random_scene(seed) for seed in range(12)]
    hashes = [perceptual_hash(image) for image in images]
    assert min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]) > 6
    kept, removed = dedupe([f"p{i:02d}" for i in range(12)], hashes, [1] * 12, max_distance=6)
    assert len(kept) == 12 and removed == []


def test_groups_are_transitive_and_cover_every_index():
    # 0-1 and 1-2 are within 2 bits, 0-2 are 4 apart: one group at max_distance 2.
    hashes = ["0000000000000000", "0000000000000003", "000000000000000f", "ffffffffffffffff"]
    assert near_duplicate_groups(hashes, max_distance=2) == [[0, 1, 2], [3]]
    assert near_duplicate_groups(hashes, max_distance=0) == [[0], [1], [2], [3]]
    assert near_duplicate_groups([], max_distance=5) == []
    assert hamming(hashes[0], hashes[3]) == 64
