"""params.yaml `synthesize`: the materialized suites, and RainEntry (a preset name or a recipe),
which `train.rain` uses too."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from pipeline.params.base import Strict
from pipeline.params.rain import RainConfig
from pipeline.params.presets import PRESETS


def _rain_entry_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "preset"
    if isinstance(value, (dict, RainConfig)):
        return "custom"
    return None


# One rain entry: a preset name (small, medium, large, random) or a custom RainConfig mapping.
RainEntry = Annotated[
    Union[
        Annotated[Literal[PRESETS], Tag("preset")],  # type: ignore[valid-type]
        Annotated[RainConfig, Tag("custom")],
    ],
    Discriminator(
        _rain_entry_kind,
        custom_error_type="rain_entry",
        custom_error_message=(
            f"a rain entry is a preset name ({', '.join(PRESETS)}) or a mapping with "
            "amount, width, length, angle (and optionally width_probs, beta, name, extras)"
        ),
    ),
]


SUITE_GENERATORS = ("recipe", "screen_streaks", "wind_streaks", "drops", "clean")


class SuiteSpec(Strict):
    """One materialized suite on a split's eval crops.

    `generator`: `recipe` (the training recipe, one of `presets` drawn per image), one of the
    out-of-distribution rain models of pipeline.synthesis.ood_rain (`screen_streaks`,
    `wind_streaks`, `drops`: other compositing and streak/drop shapes, never seen in training),
    or `clean` (no rain at all: a derainer must give the photo back). `max_images` keeps the
    first N crops (by id), e.g. to keep validation during training cheap.
    """

    generator: Literal[SUITE_GENERATORS] = "recipe"  # type: ignore[valid-type]
    presets: list[RainEntry] = Field(default_factory=list)
    split: Literal["val", "test"] = "test"
    max_images: Optional[int] = Field(None, ge=1)

    @model_validator(mode="after")
    def _presets_for_recipe(self) -> "SuiteSpec":
        if self.generator == "recipe" and not self.presets:
            raise ValueError("generator 'recipe' needs presets (e.g. [small, medium])")
        if self.generator != "recipe" and self.presets:
            raise ValueError(f"presets apply to generator 'recipe' only, not {self.generator!r}")
        return self


class Synthesize(Strict):
    mask_threshold: int = Field(50, ge=0, le=254)
    suites: dict[str, SuiteSpec] = Field(min_length=1)

    @field_validator("suites")
    @classmethod
    def _suite_names(cls, suites: dict[str, SuiteSpec]) -> dict[str, SuiteSpec]:
        for name in suites:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"suite name {name!r} must be letters, digits, '-' or '_'")
        return suites
