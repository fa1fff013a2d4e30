"""Exact and near-duplicate photos, found with perceptual hashes (the `imagehash` library).

A perceptual hash (pHash: the signs of the low-frequency DCT of a 32×32 grey thumbnail, 64 bits)
survives resizing and recompression, so a wallpaper shipped at two resolutions, or a photo saved
again as JPEG, lands within a few bits of the original. Photos whose hashes differ by at most
`max_distance` bits are linked; linked photos form one group (transitively), and each group keeps
exactly one photo.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

HASH_BITS = 64  # imagehash.phash with its default hash_size=8


def perceptual_hash(image: np.ndarray) -> str:
    """pHash of uint8 (H, W, 3) RGB as 16 hex digits (64 bits)."""
    import imagehash
    from PIL import Image

    return str(imagehash.phash(Image.fromarray(image)))


def hamming(hash_a: str, hash_b: str) -> int:
    """Number of differing bits between two hex hashes, in [0, 64]."""
    return (int(hash_a, 16) ^ int(hash_b, 16)).bit_count()


def near_duplicate_groups(hashes: Sequence[str], max_distance: int, block: int = 1024) -> list[list[int]]:
    """Indices of `hashes` grouped by connected components of "distance ≤ max_distance".

    Returns every index exactly once; groups are sorted, and ordered by their first index.
    Pairs are compared block by block so memory stays at block × len(hashes) bits counts.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(hashes)
    if n == 0:
        return []
    values = np.array([int(h, 16) for h in hashes], dtype=np.uint64)
    rows, cols = [], []
    for start in range(0, n, block):
        distances = np.bitwise_count(values[start : start + block, None] ^ values[None, :])
        i, j = np.nonzero(distances <= max_distance)
        keep = start + i < j  # each unordered pair once, no self-pairs
        rows.append(start + i[keep])
        cols.append(j[keep])
    rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows_all), dtype=np.int8), (rows_all, cols_all)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    return sorted(groups.values(), key=lambda group: group[0])


# Original file suffixes whose pixels are exactly the photographer's (no lossy compression).
LOSSLESS_SUFFIXES = frozenset({".png", ".tif", ".tiff", ".bmp", ".ppm", ".pgm", ".pnm"})


def lossless_originals(manifest: Path) -> set[str]:
    """Image ids of a pool manifest.csv whose original file (`member`) had a lossless suffix."""
    from pipeline.io import read_csv

    return {row["image_id"] for row in read_csv(manifest)
            if PurePosixPath(row.get("member") or "").suffix.lower() in LOSSLESS_SUFFIXES}


def dedupe(
    image_ids: Sequence[str],
    hashes: Sequence[str],
    pixels: Sequence[int],
    max_distance: int,
    lossless: Sequence[bool] | None = None,
) -> tuple[list[str], list[dict]]:
    """Keep one photo per near-duplicate group: the one with most pixels, then a lossless
    original (`lossless[i]`, e.g. PNG/TIFF) over a lossy copy (JPEG), then the smallest id.

    Keeping the largest copy keeps the most detail (a downscaled copy is the one to drop); at
    equal size the lossless file has no compression artefacts.
    Returns (kept image ids, sorted; removed rows `{image_id, duplicate_of, distance}` sorted by id).
    """
    lossless = [False] * len(image_ids) if lossless is None else list(lossless)
    if not len(image_ids) == len(hashes) == len(pixels) == len(lossless):
        raise ValueError("image_ids, hashes, pixels and lossless must have the same length")
    kept, removed = [], []
    for group in near_duplicate_groups(hashes, max_distance):
        keeper = min(group, key=lambda i: (-int(pixels[i]), not lossless[i], image_ids[i]))
        kept.append(image_ids[keeper])
        for index in group:
            if index != keeper:
                removed.append(
                    {
                        "image_id": image_ids[index],
                        "duplicate_of": image_ids[keeper],
                        "distance": hamming(hashes[index], hashes[keeper]),
                    }
                )
    return sorted(kept), sorted(removed, key=lambda row: row["image_id"])
