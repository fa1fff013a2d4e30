"""params.yaml `evaluate` and `register`: the suites scored, and the promotion gate."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from pipeline.params.base import Strict


class PairedFolderSuite(Strict):
    """A user's folder with `clean/` and `rainy/` images of the same file names, and optionally
    `rain/` (grey rain layer or mask in 0..255, same names): scored like a synthesized suite
    (masked scores only when `rain/` exists)."""

    type: Literal["paired"]
    name: str
    path: str  # absolute, or relative to the workspace root


class UnpairedFolderSuite(Strict):
    """A user's folder of real rainy photos with no clean reference: derained for the visual
    report only (no metrics)."""

    type: Literal["unpaired"]
    name: str
    path: str  # absolute, or relative to the workspace root


FolderSuite = Annotated[Union[PairedFolderSuite, UnpairedFolderSuite], Field(discriminator="type")]


class Evaluate(Strict):
    suites: list[str] = Field(min_length=1)  # synthesized suites, names from synthesize.suites
    folders: list[FolderSuite] = Field(default_factory=list)  # the user's own suites
    mask_threshold: int = Field(ge=0, le=254)  # R > threshold is the binary rain mask; required: dvc.yaml's train stage names it
    report_images: int = Field(3, ge=0, le=16)  # images per suite shown in report.png
    tile: int = Field(1024, ge=32, le=8192)  # larger images are tiled (edge, px)
    overlap: int = Field(32, ge=0, le=4096)  # tiles overlap and cross-fade by this many px
    batch_size: int = Field(8, ge=1, le=1024)  # same-size images per forward pass

    @model_validator(mode="after")
    def _suite_names(self) -> "Evaluate":
        if 2 * self.overlap > self.tile:
            raise ValueError(f"overlap={self.overlap} must be at most tile / 2 (tile={self.tile})")
        names = list(self.suites) + [folder.name for folder in self.folders]
        for name in names:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"suite name {name!r} must be letters, digits, '-' or '_'")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"suite names must be unique across suites and folders, repeated: {duplicates}")
        return self


class Gates(Strict):
    """The promotion gate: `floors` {<metric>/<suite>: minimum}, `champion_tolerance`
    {<metric>/<suite>: dB the candidate may fall below the champion}. At least one rule."""

    floors: dict[str, float] = Field(default_factory=dict)
    champion_tolerance: dict[str, float] = Field(default_factory=dict)

    @field_validator("champion_tolerance")
    @classmethod
    def _non_negative(cls, tolerances: dict[str, float]) -> dict[str, float]:
        for key, value in tolerances.items():
            if value < 0:
                raise ValueError(f"tolerance for {key!r} must be >= 0, got {value}")
        return tolerances

    @model_validator(mode="after")
    def _not_empty(self) -> "Gates":
        # An empty gate must be a choice someone wrote down (`gates: none`), never an accident.
        if not self.floors and not self.champion_tolerance:
            raise ValueError("no rules: give floors and/or champion_tolerance, or write `gates: none` to register without a gate")
        return self


class Register(Strict):
    model_name: str = Field("raincheck-derain", min_length=1)
    prior_name: str = Field("raincheck-prior", min_length=1)
    # Required: a missing section must stop the run, not promote ungated models. `none` = no gate.
    gates: Annotated[
        Union[Annotated[Gates, Tag("rules")], Annotated[Literal["none"], Tag("none")]],
        Discriminator(lambda value: "none" if isinstance(value, str) else "rules"),  # one branch, one error
    ]

    @property
    def rules(self) -> Optional[Gates]:
        """The gate's rules, or None for an explicit `gates: none`."""
        return None if self.gates == "none" else self.gates
