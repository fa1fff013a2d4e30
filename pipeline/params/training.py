"""params.yaml `prior` and `train`: what the two training steps fit, and how."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from pipeline.params.base import Strict
from pipeline.params.models import DerainSpec, PriorSpec
from pipeline.params.synthesis import RainEntry


class Prior(Strict):
    # The training keys below apply to vq_autoencoder; a pretrained_autoencoder is not trained.
    model: PriorSpec
    # Required for a vq_autoencoder (checked below), None for a pretrained one: code defaults here
    # had drifted from params.yaml, so a deleted key silently trained another prior.
    iterations: Optional[int] = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: Optional[float] = Field(None, gt=0, lt=1)
    commitment_weight: float = Field(0.25, ge=0)
    discriminator_weight: float = Field(0.0, ge=0)  # patch-discriminator (hinge) loss; 0 = off
    restart_every: int = Field(50, ge=0)  # re-seed unused codes every N steps (first 80%); 0 = never
    val_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=1, le=256)

    @model_validator(mode="after")
    def _training_keys(self) -> "Prior":
        missing = [f"prior.{key}" for key in ("iterations", "lr") if getattr(self, key) is None]
        if self.model.type == "vq_autoencoder" and missing:
            raise ValueError(f"missing key {', '.join(missing)}: required to train a vq_autoencoder prior")
        return self


class TrainRain(Strict):
    """On-the-fly training rain: one entry of `presets` per crop, applied with `probability`."""

    presets: list[RainEntry] = Field(min_length=1)
    probability: float = Field(0.9, ge=0, le=1)


class Train(Strict):
    model: DerainSpec
    rain: TrainRain
    iterations: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: list[float] = Field(default_factory=lambda: [0.6, 0.85])
    ema_decay: float = Field(0.999, ge=0, lt=1)
    latent_weight: float = Field(0.1, ge=0)
    mask_weight: float = Field(1.0, ge=0)  # BCE of the predicted rain mask against the rain layer (masked_*)
    mask_target: Literal["soft", "binary"] = "soft"  # min(1, R / threshold), or R > threshold
    mask_negative_weight: float = Field(1.0, ge=1)  # BCE weight of rain-free pixels (false alarms cost more)
    branch_weight: float = Field(0.0, ge=0)  # L1 of a masked model's re-drawing P(x) on every pixel
    val_suites: list[str] = Field(default_factory=list)  # synthesize.suites validated on during training (val split)
    crop_size: int = Field(64, ge=8, le=4096)  # random crop from each training patch (<= curate.patch_size)
    augment: bool = True  # random flips / 90° rotations of the clean crop (before the rain is added)
    val_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=1, le=256)
    seed: Optional[int] = Field(None, ge=0, le=2**31 - 1)  # training draws only; None = the top-level seed

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, milestones: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in milestones) or milestones != sorted(milestones):
            raise ValueError("milestones must be increasing fractions of iterations in (0, 1)")
        return milestones
