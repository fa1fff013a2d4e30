"""Curation's second pass: the patch arrays and eval crops of the kept photos, written to disk.

patches_train.npy (the selected patches), patches_val.npy and patches_prior.npy are laid out
once at their final size and filled one photo at a time, so memory holds one photo's pixels
however large the pool; eval/<split>/ gets the val and test photos' centre crops. Everything is
written under temporary names and renamed when complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.curation.patches import cut_patches, eval_crops
from pipeline.curation.pool import load_photo
from pipeline.io import atomic_path, save_npy, save_png

EVAL_SPLITS = ("val", "test")  # the splits whose photos get eval crops


class PatchFile:
    """A .npy of uint8 (count, P, P, 3) filled in order, one photo's rows at a time.

    The file is laid out once by open_memmap; each photo's rows are then written through a
    memory map of just those rows, released right after, so resident memory never holds more
    than one photo's patches (a whole-file map would keep every written page resident).
    """

    def __init__(self, path: Path, count: int, size: int):
        self.path, self.count, self.row = path, count, 0
        self.row_bytes = size * size * 3
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
        self.offset = array.offset
        del array

    def append(self, patches: np.ndarray) -> None:
        if len(patches) == 0:
            return
        if self.row + len(patches) > self.count:
            raise RuntimeError(f"{self.path}: more patches than the {self.count} rows laid out")
        window = np.memmap(
            self.path, dtype=np.uint8, mode="r+", shape=patches.shape, offset=self.offset + self.row * self.row_bytes
        )
        window[:] = patches
        window.flush()
        del window
        self.row += len(patches)


def write_patches_and_crops(pool: Path, out: Path, photos, manifest, size: int, crops_per_photo: int = 1) -> None:
    """patches_train.npy (selected, manifest order), patches_val.npy, patches_prior.npy, and
    eval/<split>/<id>.png (or <id>_c<k>.png, `crops_per_photo` of them) for val and test photos."""
    from tqdm import tqdm

    selected = manifest["selected"].to_numpy()
    for_prior = manifest["prior"].to_numpy()
    is_val = (manifest["split"] == "val").to_numpy()
    positions = manifest[["y", "x"]].to_numpy(dtype=np.int64)
    rows_of = manifest.groupby("image_id", sort=False).indices
    with (
        atomic_path(out / layout.PATCHES_TRAIN) as train_path,
        atomic_path(out / layout.PATCHES_VAL) as val_path,
        atomic_path(out / layout.PATCHES_PRIOR) as prior_path,
        atomic_path(out / "eval") as eval_dir,
    ):
        train = _open_patch_file(train_path, int(selected.sum()), size)
        prior = _open_patch_file(prior_path, int(for_prior.sum()), size)
        val = _open_patch_file(val_path, int(is_val.sum()), size)
        for split in EVAL_SPLITS:
            (eval_dir / split).mkdir(parents=True)
        for photo in tqdm(photos.itertuples(index=False), total=len(photos), desc="curate: write", unit="photo"):
            rows = rows_of.get(photo.image_id, np.zeros(0, dtype=np.int64))
            take_train, take_val, take_prior = rows[selected[rows]], rows[is_val[rows]], rows[for_prior[rows]]
            if not (len(take_train) or len(take_val) or len(take_prior) or photo.eval_crop):
                continue  # this photo contributes nothing: do not even decode it
            image = load_photo(pool, photo.image_id)
            if image.shape[:2] != (photo.height, photo.width):
                raise RuntimeError(f"{pool / 'images' / photo.image_id}.png changed while curating")
            if train is not None:
                train.append(cut_patches(image, positions[take_train], size))
            if val is not None:
                val.append(cut_patches(image, positions[take_val], size))
            if prior is not None:
                prior.append(cut_patches(image, positions[take_prior], size))
            if photo.eval_crop:
                crops = eval_crops(image, photo.eval_crop, crops_per_photo)
                # One crop keeps the photo's id; several are <id>_c<k> (k in grid order).
                names = [photo.image_id] if len(crops) == 1 else [f"{photo.image_id}_c{k}" for k in range(len(crops))]
                for name, crop in zip(names, crops):
                    save_png(eval_dir / photo.split / f"{name}.png", crop)


def _open_patch_file(path: Path, count: int, size: int) -> PatchFile | None:
    """A PatchFile, or None after writing an empty (0, P, P, 3) array (a 0-byte map is not possible)."""
    if count == 0:
        save_npy(path, np.zeros((0, size, size, 3), dtype=np.uint8))
        return None
    return PatchFile(path, count, size)


def remove_stale_outputs(out: Path) -> None:
    import shutil

    for name in (layout.PATCHES_TRAIN, layout.PATCHES_VAL, layout.PATCHES_PRIOR):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "eval", ignore_errors=True)
