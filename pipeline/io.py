"""File helpers shared by every step: atomic writes, lossless images, JSON and CSV tables.

Everything that writes goes to a temporary sibling first and is renamed into place, so a crash or
kill never leaves a half-written output that a later stage would trust.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

# The image files raincheck reads (suffix in any case): a folder source's photos, `raincheck
# predict`'s inputs, evaluate.folders suites. All decode with Pillow (and pipeline.ingestion.decode).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it onto `path`.

    Works for files and directories; on error the temporary is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: Path | str, obj: object) -> None:
    """Write pretty, key-sorted JSON atomically (NaN is written as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_nan_to_none(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str) -> object:
    return json.loads(Path(path).read_text())


def _nan_to_none(obj: object) -> object:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, np.generic):
        return _nan_to_none(obj.item())
    return obj


def write_csv(path: Path | str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """Write a list of dicts as CSV atomically; columns default to the first row's keys."""
    columns = list(columns or (rows[0].keys() if rows else []))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path | str) -> list[dict[str, str]]:
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def save_png(path: Path | str, image: np.ndarray) -> None:
    """Save uint8 HxWx3 (RGB) or HxW (grey) losslessly and deterministically (no metadata)."""
    from PIL import Image

    if image.dtype != np.uint8:
        raise TypeError(f"save_png expects uint8, got {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", optimize=False, compress_level=6)


def read_image(path: Path | str, grey: bool = False) -> np.ndarray:
    """An image file -> uint8 HxWx3 RGB in [0, 255] (HxW when `grey`), as Pillow converts it.

    The one reader of image files on disk: the stages' own PNGs (save_png) and evaluate.folders.
    Raises ValueError naming the file when it is missing or does not decode. (A photo from outside
    the pipeline, at ingest or through the served model, goes through pipeline.ingestion.decode,
    which also handles 16-bit, transparency, EXIF orientation and colour profiles.)
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L" if grey else "RGB")).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


load_png = read_image  # the name the stages use for reading back what save_png wrote


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write bytes atomically (an encoded file, e.g. the PNG the served model answered)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def save_npy(path: Path | str, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_npy(path: Path | str, mmap: bool = True) -> np.ndarray:
    """Load an array saved by save_npy; memory-mapped by default so large sets stay on disk."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
