"""Great Expectations gates: a good manifest passes; a leaking or uniform one fails, saying why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import CurationChecks
from pipeline.curation.checks import DataCheckError, raise_on_failure, results_json, run_checks
from pipeline.curation.selection import complexity_bins

CHECKS = CurationChecks(
    min_train_photos=3, min_val_photos=1, min_test_photos=1, min_train_patches=10, min_complexity_bins=2
)


def tables(gradients: np.ndarray | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """10 photos (6 train, 2 val, 2 test) with 8 patches each; train patches all selected."""
    rng = np.random.default_rng(0)
    photo_rows, patch_rows = [], []
    for i in range(10):
        image_id, split = f"img-{i:02d}", "train" if i < 6 else ("val" if i < 8 else "test")
        measures = {"gradient": 10.0, "laplacian": 200.0, "entropy": 6.0, "png_bpp": 12.0, "colorfulness": 30.0}
        photo_rows.append({"image_id": image_id, "split": split, "phash": f"{i:016x}", **measures})
        for k in range(8):
            patch_rows.append(
                {
                    "patch_id": f"{image_id}-{k}", "image_id": image_id, "split": split, "x": 16 * k, "y": 0,
                    "selected": split == "train", **measures, "gradient": float(rng.uniform(0, 60)),
                }
            )
    photos, manifest = pd.DataFrame(photo_rows), pd.DataFrame(patch_rows)
    if gradients is not None:
        manifest["gradient"] = gradients
    manifest["complexity_bin"] = complexity_bins(manifest["gradient"].to_numpy(), 3)[0]
    return photos, manifest


def failures(results) -> list[str]:
    return [r.check for r in results if not r.success]


def test_good_tables_pass():
    photos, manifest = tables()
    results = run_checks(photos, manifest, CHECKS)
    assert failures(results) == []
    raise_on_failure(results)  # does not raise
    report = results_json(results)
    assert report["success"] and report["total"] == len(results) > 20
    assert {"suite", "expectation", "success", "observed", "threshold"} <= set(report["results"][0])


def test_leaking_manifest_fails_naming_the_photo():
    photos, manifest = tables()
    manifest.loc[manifest["image_id"] == "img-00", "split"] = ["train"] * 4 + ["test"] * 4  # one photo, two splits
    results = run_checks(photos, manifest, CHECKS)
    assert failures(results) == ["photos in more than one split (leakage)"]
    with pytest.raises(DataCheckError, match=r"more than one split.*img-00.*required none"):
        raise_on_failure(results)


def test_uniform_manifest_fails_with_observed_value_and_threshold():
    photos, manifest = tables(gradients=np.full(80, 7.5))  # every patch equally complex
    results = run_checks(photos, manifest, CHECKS)
    assert failures(results) == ["complexity bins populated by the training split (too uniform if low)"]
    with pytest.raises(DataCheckError) as error:
        raise_on_failure(results)
    message = str(error.value)
    assert "failed 1 of" in message
    assert "observed 1; required >= 2 (set by curate.checks.min_complexity_bins)" in message
