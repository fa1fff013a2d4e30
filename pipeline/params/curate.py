"""params.yaml `curate`: patches, split, selection policy and the data checks' thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.params.base import Strict

# The names curate.complexity may take, in the column order of the curated tables; each is
# implemented in pipeline.curation.complexity (MEASURE_FUNCTIONS, checked equal by tests/data/test_complexity.py).
COMPLEXITY_MEASURES = ("gradient", "laplacian", "entropy", "png_bpp", "colorfulness")

SELECTION_POLICIES = ("all", "smooth", "textured", "balanced")


class Split(Strict):
    train: float = Field(gt=0, lt=1)
    val: float = Field(gt=0, lt=1)
    test: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "Split":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class Selection(Strict):
    n_backgrounds: int = Field(0, ge=0)  # training patches kept; 0 keeps all
    policy: Literal[SELECTION_POLICIES] = "all"  # type: ignore[valid-type]
    bins: int = Field(3, ge=2, le=20)


class CurationChecks(Strict):
    min_train_photos: int = Field(3, ge=1)
    min_val_photos: int = Field(1, ge=1)
    min_test_photos: int = Field(1, ge=1)
    min_train_patches: int = Field(32, ge=1)
    min_complexity_bins: int = Field(2, ge=1)


class Curate(Strict):
    patch_size: int = Field(64, ge=16, le=1024)
    patch_stride: int = Field(64, ge=8, le=1024)
    eval_size: int = Field(256, ge=16, le=4096)
    eval_crops: int = Field(4, ge=1, le=64)  # eval crops per val/test photo, spread over a grid
    complexity: Literal[COMPLEXITY_MEASURES] = "gradient"  # type: ignore[valid-type]
    dedupe_max_distance: int = Field(6, ge=0, le=64)
    prior_patches: int = Field(0, ge=0)  # train-split patches for the prior (seeded subset; 0 = all)
    split: Split = Split(train=0.7, val=0.15, test=0.15)
    selection: Selection = Selection()
    checks: CurationChecks = CurationChecks()

    @model_validator(mode="after")
    def _consistent(self) -> "Curate":
        if self.eval_size % 16:
            raise ValueError(f"eval_size={self.eval_size} must be a multiple of 16 (models downsample by up to 2**4)")
        if self.checks.min_complexity_bins > self.selection.bins:
            raise ValueError(
                f"checks.min_complexity_bins={self.checks.min_complexity_bins} cannot exceed "
                f"selection.bins={self.selection.bins}"
            )
        return self
