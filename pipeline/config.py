"""Typed, strict view of params.yaml.

Every section of params.yaml has a model here. Unknown keys, wrong types and out-of-range values
raise :class:`ParamsError`, whose message names the file, the dotted key and what is allowed.
Models are frozen: code never mutates its configuration.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS = ("small", "medium", "large", "random")
COMPLEXITY_MEASURES = ("gradient", "laplacian", "entropy", "png_bpp", "colorfulness")
SELECTION_POLICIES = ("all", "smooth", "textured", "balanced")


# `register` is both a step name (so a params section) and an ABCMeta method name.
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows', category=UserWarning)


class ParamsError(ValueError):
    """A params file that cannot be used; the message says which key and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ----------------------------------------------------------------------------- paths
class Paths(Strict):
    pool: str = "data"
    curated: str = "build/curated"
    suites: str = "build/suites"
    prior: str = "build/prior"
    model: str = "build/model"
    evaluation: str = "build/evaluation"
    registry: str = "build/registry"


# ----------------------------------------------------------------------------- ingest
class PypiSource(Strict):
    """Photos shipped inside PyPI wheels (downloaded with `pip download --no-deps`)."""

    type: Literal["pypi"]
    packages: list[Literal["scikit-image", "scikit-learn", "sporco"]] = Field(min_length=1)


class DebianSource(Strict):
    """Photos shipped inside Debian packages (downloaded with `apt-get download`)."""

    type: Literal["debian"]
    packages: list[
        Literal[
            "plasma-workspace-wallpapers",
            "mate-backgrounds",
            "lomiri-wallpapers-16.04",
            "lomiri-wallpapers-20.04",
            "tuxpaint-data",
            "enlightenment-data",
        ]
    ] = Field(min_length=1)
    required: bool = False  # when false, a machine without apt-get skips this source with a note


class FolderSource(Strict):
    """Any folder of the user's own photos (searched recursively)."""

    type: Literal["folder"]
    path: str
    licence: str = "unknown (user-supplied)"


Source = Annotated[Union[PypiSource, DebianSource, FolderSource], Field(discriminator="type")]


class Ingest(Strict):
    sources: list[Source] = Field(min_length=1)
    short_side: int = Field(512, ge=32, le=8192)
    max_pixels: int = Field(120_000_000, ge=1_000_000)
    min_images: int = Field(8, ge=1)


# ----------------------------------------------------------------------------- curate
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
    eval_size: int = Field(128, ge=16, le=4096)
    complexity: Literal[COMPLEXITY_MEASURES] = "gradient"  # type: ignore[valid-type]
    dedupe_max_distance: int = Field(6, ge=0, le=64)
    split: Split = Split(train=0.7, val=0.15, test=0.15)
    selection: Selection = Selection()
    checks: CurationChecks = CurationChecks()


# ----------------------------------------------------------------------------- synthesize
class SuiteSpec(Strict):
    presets: list[Literal[PRESETS]] = Field(min_length=1)  # type: ignore[valid-type]
    split: Literal["val", "test"] = "test"


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


# ----------------------------------------------------------------------------- models
class VQAutoencoderSpec(Strict):
    type: Literal["vq_autoencoder"]
    channels: int = Field(32, ge=4, le=512)
    latent_dim: int = Field(16, ge=2, le=512)
    codebook_size: int = Field(256, ge=2, le=65536)
    downsample: int = Field(2, ge=1, le=4)


class ResNetSpec(Strict):
    """Plain baseline: ResNet without batch norm and with a global residual."""

    type: Literal["resnet"]
    channels: int = Field(32, ge=4, le=512)
    blocks: int = Field(4, ge=1, le=64)


class PriorResNetSpec(Strict):
    """Restoration encoder rendering through the frozen prior's codebook and decoder."""

    type: Literal["prior_resnet"]
    channels: int = Field(32, ge=4, le=512)
    blocks: int = Field(4, ge=1, le=64)


DerainSpec = Annotated[Union[ResNetSpec, PriorResNetSpec], Field(discriminator="type")]


class Prior(Strict):
    model: VQAutoencoderSpec
    iterations: int = Field(400, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0, lt=1)
    commitment_weight: float = Field(0.25, ge=0)


class TrainRain(Strict):
    presets: list[Literal[PRESETS]] = Field(min_length=1)  # type: ignore[valid-type]
    probability: float = Field(0.9, ge=0, le=1)


class Train(Strict):
    model: DerainSpec
    rain: TrainRain
    iterations: int = Field(400, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-4, gt=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    ema_decay: float = Field(0.999, ge=0, lt=1)
    latent_weight: float = Field(0.1, ge=0)
    val_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=1, le=256)

    @field_validator("milestones")
    @classmethod
    def _fractions(cls, milestones: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in milestones) or milestones != sorted(milestones):
            raise ValueError("milestones must be increasing fractions of iterations in (0, 1)")
        return milestones


# ----------------------------------------------------------------------------- evaluate/register
class Evaluate(Strict):
    suites: list[str] = Field(min_length=1)
    mask_threshold: int = Field(50, ge=0, le=254)


class Gates(Strict):
    floors: dict[str, float] = Field(default_factory=dict)
    champion_tolerance: dict[str, float] = Field(default_factory=dict)

    @field_validator("champion_tolerance")
    @classmethod
    def _non_negative(cls, tolerances: dict[str, float]) -> dict[str, float]:
        for key, value in tolerances.items():
            if value < 0:
                raise ValueError(f"tolerance for {key!r} must be >= 0, got {value}")
        return tolerances


class Register(Strict):
    model_name: str = Field("raincheck-derain", min_length=1)
    prior_name: str = Field("raincheck-prior", min_length=1)
    gates: Gates = Gates()


# ----------------------------------------------------------------------------- the whole file
class Params(Strict):
    profile: str = "cpu"
    seed: int = Field(1234, ge=0, le=2**31 - 1)
    paths: Paths = Paths()
    ingest: Ingest
    curate: Curate = Curate()
    synthesize: Synthesize
    prior: Prior
    train: Train
    evaluate: Evaluate
    register: Register = Register()  # shadows ABCMeta.register on the class only: harmless

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        unknown = [s for s in self.evaluate.suites if s not in self.synthesize.suites]
        if unknown:
            raise ValueError(
                f"evaluate.suites names {unknown}, not defined under synthesize.suites "
                f"(defined: {sorted(self.synthesize.suites)})"
            )
        stride = 2**self.prior.model.downsample
        if self.curate.patch_size % stride:
            raise ValueError(
                f"curate.patch_size={self.curate.patch_size} must be divisible by "
                f"2**prior.model.downsample={stride}"
            )
        return self


def _format_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid parameters"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see params.yaml in the repository)"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)


def parse_params(raw: dict, source: Path | str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raises ParamsError naming each bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_error(Path(source), error)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, path)


def digest(obj: object) -> str:
    """Stable short sha256 of a JSON-able object (a params section, a manifest row list)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
