"""Reading the raw pool for curation: the image ids its manifest lists, and one photo's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.io import load_png, read_csv


def pool_image_ids(pool: Path) -> list[str]:
    """Image ids listed in {pool}/manifest.csv, sorted; every one must have its PNG."""
    manifest = pool / layout.MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: build the pool first (`raincheck ingest`)")
    rows = read_csv(manifest)
    if not rows or "image_id" not in rows[0]:
        raise ValueError(f"{manifest} lists no photos (needs an image_id column and at least one row)")
    image_ids = sorted(row["image_id"] for row in rows)
    missing = [i for i in image_ids if not (pool / "images" / f"{i}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} photo(s) in {manifest} have no file in {pool / 'images'}, e.g. {missing[:3]}"
        )
    return image_ids


def load_photo(pool: Path, image_id: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB of one pool photo."""
    return load_png(pool / "images" / f"{image_id}.png")
