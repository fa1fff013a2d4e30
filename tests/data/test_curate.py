"""run_curate end to end on a tiny pool written in the docs/dataflow.md layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.config import parse_params
from pipeline.curation.checks import DataCheckError
from pipeline.curation.curate import run_curate
from pipeline.io import load_png, save_png, write_csv

from tests.conftest import REPO, textured_photo

PATCH, EVAL = 32, 112


def write_pool(pool: Path) -> dict[str, np.ndarray]:
    """12 distinct photos (half 128x160, half 100x128), a resized duplicate and a too-small photo."""
    rng = np.random.default_rng(4)
    images = {f"synth-{i:012x}": textured_photo(rng, *((128, 160) if i % 2 else (100, 128))) for i in range(12)}
    first = images["synth-000000000000"]
    images["synth-copy"] = np.asarray(Image.fromarray(first).resize((96, 75), Image.LANCZOS))
    images["synth-tiny"] = textured_photo(rng, 24, 40)
    for image_id, image in images.items():
        save_png(pool / "images" / f"{image_id}.png", image)
    rows = [{"image_id": i, "width": im.shape[1], "height": im.shape[0]} for i, im in sorted(images.items())]
    write_csv(pool / "manifest.csv", rows)
    return images


def params(tmp_path: Path, **checks):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["paths"] = {**raw["paths"], "pool": str(tmp_path / "pool"), "curated": str(tmp_path / "curated")}
    raw["curate"].update(patch_size=PATCH, patch_stride=PATCH, eval_size=EVAL)
    raw["train"]["crop_size"] = PATCH  # params refuse crops larger than the patches
    raw["curate"]["selection"] = {"n_backgrounds": 40, "policy": "balanced", "bins": 3}
    raw["curate"]["checks"] = {**raw["curate"]["checks"], "min_train_patches": 20, **checks}
    return parse_params(raw)


@pytest.mark.slow
def test_run_curate_writes_the_documented_outputs(tmp_path: Path):
    images = write_pool(tmp_path / "pool")
    out = tmp_path / "curated"
    summary = run_curate(params(tmp_path), tmp_path)

    photos = pd.read_csv(out / "photos.csv", dtype={"phash": str})
    manifest = pd.read_csv(out / "manifest.csv")
    removed = pd.read_csv(out / "removed.csv")
    assert removed["image_id"].tolist() == ["synth-copy", "synth-tiny"]
    assert removed.loc[0, "duplicate_of"] == "synth-000000000000"
    assert len(photos) == 12 and summary["photos_kept"] == 12 and summary["duplicates_removed"] == 1
    assert list(manifest.columns[:6]) == ["patch_id", "image_id", "split", "x", "y", "selected"]

    # Split by photo: no photo in two splits; every split populated.
    assert manifest.groupby("image_id")["split"].nunique().max() == 1
    assert set(photos["split"]) == {"train", "val", "test"}

    # Exactly N selected training patches, balanced over the bins, stored in manifest order.
    selected = manifest[manifest["selected"]]
    assert len(selected) == 40 and set(selected["split"]) == {"train"}
    assert np.bincount(selected["complexity_bin"], minlength=3).tolist() in ([14, 13, 13], [13, 14, 13], [13, 13, 14])
    train = np.load(out / "patches_train.npy")
    val = np.load(out / "patches_val.npy")
    assert train.shape == (40, PATCH, PATCH, 3) and train.dtype == np.uint8
    assert val.shape == ((manifest["split"] == "val").sum(), PATCH, PATCH, 3)
    # The prior's patches: a seeded subset of the whole train split, independent of the selection.
    prior = np.load(out / "patches_prior.npy")
    prior_rows = manifest[manifest["prior"]]
    assert set(prior_rows["split"]) == {"train"}
    assert len(prior) == len(prior_rows) == min(2048, (manifest["split"] == "train").sum())
    for array, rows in ((train, selected), (val, manifest[manifest["split"] == "val"]), (prior, prior_rows)):
        for k in (0, len(rows) - 1):
            row = rows.iloc[k]
            source = images[row["image_id"]]
            assert np.array_equal(array[k], source[row["y"] : row["y"] + PATCH, row["x"] : row["x"] + PATCH])

    # Eval crops: eval_size², or the short side rounded down to 16 (100 -> 96) for smaller photos.
    for photo in photos.itertuples():
        crop = out / "eval" / photo.split / f"{photo.image_id}.png"
        if photo.split == "train":
            assert not crop.exists()
            continue
        expected = EVAL if min(photo.height, photo.width) >= EVAL else 96
        assert load_png(crop).shape == (expected, expected, 3)
    assert summary["eval_crops_reduced"] == ((photos["split"] != "train") & (photos["height"] == 100)).sum()

    checks = json.loads((out / "checks.json").read_text())
    assert checks["success"] and checks["failed"] == 0
    assert json.loads((out / "summary.json").read_text())["patches_selected"] == 40
    assert all(isinstance(v, (int, float)) for v in summary.values())
    assert (out / "report.png").stat().st_size > 10_000

    # Same pool, same params: byte-identical outputs (DVC sees no change).
    before = {name: (out / name).read_bytes() for name in ("manifest.csv", "photos.csv", "patches_train.npy")}
    run_curate(params(tmp_path), tmp_path)
    assert before == {name: (out / name).read_bytes() for name in before}

    # A failed gate: DataCheckError names the key, checks.json records it, stale patches are gone.
    expected = r"distinct photos in val: observed \d+; required >= 9 \(set by curate\.checks\.min_val_photos\)"
    with pytest.raises(DataCheckError, match=expected):
        run_curate(params(tmp_path, min_val_photos=9), tmp_path)
    assert not json.loads((out / "checks.json").read_text())["success"]
    assert not (out / "patches_train.npy").exists() and not (out / "eval").exists()


def test_missing_pool_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.csv not found.*raincheck ingest"):
        run_curate(params(tmp_path), tmp_path)
    write_pool(tmp_path / "pool")
    (tmp_path / "pool" / "images" / "synth-tiny.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 photo\(s\).*synth-tiny"):
        run_curate(params(tmp_path), tmp_path)


def test_curate_params_are_checked_together(tmp_path: Path):
    from pipeline.config import ParamsError

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["curate"]["eval_size"] = 100
    with pytest.raises(ParamsError, match=r"curate: .*eval_size=100 must be a multiple of 16"):
        parse_params(raw)
    raw["curate"]["eval_size"] = 128
    raw["curate"]["checks"]["min_complexity_bins"] = 5
    with pytest.raises(ParamsError, match=r"curate: .*min_complexity_bins=5 cannot exceed selection.bins=3"):
        parse_params(raw)


def test_eval_crops_spread_over_the_photo_and_one_is_the_centre():
    from pipeline.curation.patches import centre_crop, eval_crops

    image = textured_photo(np.random.default_rng(1), 200, 300)
    crops = eval_crops(image, 96, 4)
    assert len(crops) == 4 and all(c.shape == (96, 96, 3) for c in crops)
    assert len({c.tobytes() for c in crops}) == 4  # distinct places of the photo
    assert np.array_equal(crops[0], image[4:100, 6:102])  # the centred grid's first cell
    assert np.array_equal(eval_crops(image, 96, 1)[0], centre_crop(image, 96))
    assert len(eval_crops(image, 160, 4)) == 1  # only one cell fits
    with pytest.raises(ValueError, match="cannot take a 256"):
        eval_crops(image, 256, 2)
