"""A custom rain recipe (RainConfig, with its opt-in Haze extra): the schema of one rain entry.

The named presets built from it are in pipeline.params.presets.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.params.base import Strict


def _ordered_range(value: tuple, low: float, high: float) -> tuple:
    """Check a [low, high] pair: both inside [low, high] bounds and not inverted."""
    lo, hi = value
    if not low <= lo <= high or not low <= hi <= high:
        raise ValueError(f"both ends must lie in [{low}, {high}], got [{lo}, {hi}]")
    if lo > hi:
        raise ValueError(f"range is inverted or empty: low {lo} > high {hi}")
    return value


class Haze(Strict):
    """Opt-in veiling term beyond the recipe: rainy = (1 - t)·rainy + t·airlight (grey), per image.

    `strength` t and `airlight` (fraction of white) are drawn uniformly from their ranges."""

    type: Literal["haze"]
    strength: tuple[float, float] = (0.1, 0.3)
    airlight: tuple[float, float] = (0.8, 1.0)

    @field_validator("strength", "airlight")
    @classmethod
    def _unit_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _ordered_range(value, 0.0, 1.0)


class RainConfig(Strict):
    """A custom rain recipe (method.md, "Rain synthesis"); every parameter is drawn per image.

    amount: U[lo, hi] fraction of pixels that seed a streak, in [0, 1].
    width: odd Gaussian sizes giving the streak thickness (1 = no blur), drawn with `width_probs`
        (default: uniform).
    length: streak length in px, integer U[lo, hi].
    angle: degrees from vertical, counter-clockwise positive, integer; one [lo, hi] range or a list
        of disjoint ranges (drawn uniformly over their union).
    beta: U[lo, hi] weight of the rain layer in the saturating add.
    extras: opt-in degradations beyond the recipe (none by default).
    """

    name: str = Field("custom", pattern=r"^[A-Za-z0-9_-]+$")
    amount: tuple[float, float]
    width: list[int] = Field(min_length=1)
    width_probs: list[float] | None = None
    length: tuple[int, int]
    angle: list[tuple[int, int]] = Field(min_length=1)
    beta: tuple[float, float] = (0.7, 1.0)
    extras: list[Haze] = Field(default_factory=list)

    @field_validator("amount", "beta")
    @classmethod
    def _unit_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _ordered_range(value, 0.0, 1.0)

    @field_validator("length")
    @classmethod
    def _length(cls, value: tuple[int, int]) -> tuple[int, int]:
        return _ordered_range(value, 1, 255)

    @field_validator("width")
    @classmethod
    def _width(cls, value: list[int]) -> list[int]:
        bad = [w for w in value if w < 1 or w % 2 == 0 or w > 63]
        if bad:
            raise ValueError(f"widths must be odd integers in [1, 63], got {bad}")
        if len(set(value)) != len(value):
            raise ValueError(f"widths must be distinct, got {value}")
        return value

    @field_validator("angle", mode="before")
    @classmethod
    def _one_range_or_many(cls, value: object) -> object:
        # `angle: [-30, 30]` is shorthand for the one-range list `[[-30, 30]]`. Pairs become tuples:
        # what a before-validator returns is validated as Python, where strict tuples refuse lists.
        if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value
        ):
            return [tuple(value)]
        if isinstance(value, list):
            return [tuple(pair) if isinstance(pair, list) else pair for pair in value]
        return value

    @field_validator("angle")
    @classmethod
    def _angle(cls, value: list[tuple[int, int]]) -> list[tuple[int, int]]:
        for pair in value:
            try:
                _ordered_range(pair, -90, 90)
            except ValueError as error:
                raise ValueError(f"angle range {list(pair)}: {error}") from None
        ordered = sorted(value)
        for (_, first_hi), (second_lo, _) in zip(ordered, ordered[1:]):
            if second_lo <= first_hi:
                raise ValueError(f"angle ranges must be disjoint, got {[list(p) for p in value]}")
        return value

    @model_validator(mode="after")
    def _width_probs(self) -> "RainConfig":
        if self.width_probs is None:
            return self
        if len(self.width_probs) != len(self.width):
            raise ValueError(
                f"width_probs needs one probability per width ({len(self.width)}), "
                f"got {len(self.width_probs)}"
            )
        if any(p < 0 for p in self.width_probs) or abs(sum(self.width_probs) - 1) > 1e-6:
            raise ValueError(f"width_probs must be >= 0 and sum to 1, got {self.width_probs}")
        return self
