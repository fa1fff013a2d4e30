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
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic import AfterValidator, Discriminator, Tag

from pipeline.params_checks import DuplicateKeyError, as_json, cross_field_errors, read_yaml, valid_cron, valid_timezone

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
    """Photos shipped inside PyPI wheels (`pip download --no-deps --only-binary=:all:`)."""

    type: Literal["pypi"]
    packages: list[Literal["scikit-image", "scikit-learn", "sporco"]] = Field(min_length=1)
    required: bool = False  # when false, a wheel that cannot be downloaded is skipped with a note

    @field_validator("packages")
    @classmethod
    def _unique(cls, packages: list[str]) -> list[str]:
        return _no_repeats(packages)


class DebianSource(Strict):
    """Photos shipped inside Debian packages (`apt-get download`, read with `dpkg-deb`)."""

    type: Literal["debian"]
    packages: list[
        Literal[
            "plasma-workspace-wallpapers",
            "mate-backgrounds",
            "lomiri-wallpapers-16.04",
            "lomiri-wallpapers-20.04",
            "tuxpaint-data",
            "enlightenment-data",  # optional: a 401 MB download for 14 photos
        ]
    ] = Field(min_length=1)
    required: bool = False  # when false, a machine without apt-get skips this source with a note

    @field_validator("packages")
    @classmethod
    def _unique(cls, packages: list[str]) -> list[str]:
        return _no_repeats(packages)


class FolderSource(Strict):
    """Any folder of the user's own photos (searched recursively; relative to the workspace root)."""

    type: Literal["folder"]
    path: str = Field(min_length=1)
    licence: str = Field("unknown (user-supplied)", min_length=1)


def _no_repeats(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"packages listed more than once: {repeated}")
    return names


Source = Annotated[Union[PypiSource, DebianSource, FolderSource], Field(discriminator="type")]


class Ingest(Strict):
    sources: list[Source] = Field(min_length=1)
    short_side: int = Field(512, ge=32, le=8192)  # larger photos are scaled down to this short side
    max_pixels: int = Field(120_000_000, ge=1_000_000)  # decompression-bomb guard (width * height)
    max_file_bytes: int = Field(200_000_000, ge=1_000_000)  # larger files are rejected before reading
    min_images: int = Field(8, ge=1)  # fewer usable photos than this fails the ingest


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
    eval_crops: int = Field(1, ge=1, le=64)  # eval crops per val/test photo, spread over a grid
    complexity: Literal[COMPLEXITY_MEASURES] = "gradient"  # type: ignore[valid-type]
    dedupe_max_distance: int = Field(6, ge=0, le=64)
    prior_patches: int = Field(2048, ge=0)  # train-split patches for the prior (seeded subset; 0 = all)
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


# ----------------------------------------------------------------------------- synthesize
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
            "a rain entry is a preset name (small, medium, large, random) or a mapping with "
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


# ----------------------------------------------------------------------------- models
class VQAutoencoderSpec(Strict):
    """The content prior: conv encoder, codebook, conv decoder (pipeline.models.vq).

    Width is `channels` at full resolution and doubles at each of the `downsample` ×2 steps; the
    latent grid is (H / 2**downsample, W / 2**downsample) vectors of `latent_dim`.
    """

    type: Literal["vq_autoencoder"]
    channels: int = Field(16, ge=4, le=512)
    latent_dim: int = Field(16, ge=2, le=512)
    codebook_size: int = Field(256, ge=2, le=65536)
    downsample: int = Field(2, ge=1, le=4)
    res_blocks: int = Field(1, ge=0, le=16)  # residual blocks at the latent resolution, each side


class PretrainedAutoencoderSpec(Strict):
    """A user's own pre-trained autoencoder as the content prior (pipeline.models.pretrained_prior).

    `path`: a local diffusers model directory as written by ``save_pretrained`` (config.json +
    diffusion_pytorch_model.safetensors), absolute or relative to the workspace root; nothing is
    ever downloaded. `kind` names the diffusers class that config.json must declare
    (autoencoder_kl: AutoencoderKL, autoencoder_tiny: AutoencoderTiny). The prior stage does not
    train it: it measures it and stores a self-contained copy in `{prior}/prior.pt`.
    """

    type: Literal["pretrained_autoencoder"]
    path: str = Field(min_length=1)
    kind: Literal["autoencoder_kl", "autoencoder_tiny"]


PriorSpec = Annotated[Union[VQAutoencoderSpec, PretrainedAutoencoderSpec], Field(discriminator="type")]


class ResNetSpec(Strict):
    """Plain baseline: ResNet without batch norm and with a global residual."""

    type: Literal["resnet"]
    channels: int = Field(32, ge=4, le=512)
    blocks: int = Field(4, ge=1, le=64)


class PriorResNetSpec(Strict):
    """Restoration encoder rendering through the frozen prior's codebook and decoder.

    The encoder has the prior encoder's layout (its widths follow the prior) plus `blocks`
    residual blocks at the latent resolution; `init_from_prior` starts it from the prior's
    encoder weights, so that training begins from the prior's reconstruction of its input.
    """

    type: Literal["prior_resnet"]
    blocks: int = Field(4, ge=1, le=64)
    init_from_prior: bool = True


class MaskedPriorSpec(Strict):
    """JORDER-style mask composition (pipeline.models.masked): out = (1 - m)·x + m·prior_resnet(x).

    A small dilated-conv head predicts the rain mask m in [0, 1], supervised by the synthesized
    rain layer (`train.mask_weight`); pixels the head leaves at m = 0 come back exactly as they
    were, and what it marks is re-drawn by the prior-constrained branch (PriorResNetSpec fields).
    """

    type: Literal["masked_prior"]
    blocks: int = Field(ge=1, le=64)
    init_from_prior: bool = True
    mask_channels: int = Field(12, ge=4, le=256)
    mask_deadzone: float = Field(0.1, ge=0, lt=1)  # mask values below this count as 0: pixel kept exactly
    # replace: (1 - m)·x + m·P(x) | darken: P(x) may only remove light | subtract: the head also
    # estimates the rain's light a and where content is lost o; re-drawing = (1 - o)·(x - a) + o·P(x)
    composition: Literal["replace", "darken", "subtract"] = "replace"
    # Rain adds light to thin structures: a pixel is re-drawn only as far as it is brighter than its
    # surroundings (white top-hat over a bright_gate x bright_gate window); 0 = no gate.
    bright_gate: int = Field(0, ge=0, le=63)


class FusedPriorSpec(Strict):
    """CodeFormer-style fusion (pipeline.models.fused): full-resolution input features modulate the
    frozen decoder's last features, dec + fidelity·(dec·scale + shift); fidelity 0 is the pure
    prior (prior_resnet), 1 the trained setting. `fidelity` may be changed at inference."""

    type: Literal["fused_prior"]
    blocks: int = Field(ge=1, le=64)
    init_from_prior: bool = True
    detail_channels: int = Field(16, ge=4, le=256)
    fidelity: float = Field(1.0, ge=0, le=2)


class MaskedFusedSpec(Strict):
    """Both mechanisms: the rain-mask composition with the fused prior as the re-drawing branch."""

    type: Literal["masked_fused"]
    blocks: int = Field(ge=1, le=64)
    init_from_prior: bool = True
    mask_channels: int = Field(12, ge=4, le=256)
    mask_deadzone: float = Field(0.1, ge=0, lt=1)
    composition: Literal["replace", "darken", "subtract"] = "replace"
    # Rain adds light to thin structures: a pixel is re-drawn only as far as it is brighter than its
    # surroundings (white top-hat over a bright_gate x bright_gate window); 0 = no gate.
    bright_gate: int = Field(0, ge=0, le=63)
    detail_channels: int = Field(16, ge=4, le=256)
    fidelity: float = Field(1.0, ge=0, le=2)


class ClassicalMedianSpec(Strict):
    """No learning (pipeline.models.classical): pixels brighter than their 7x7 median by more than
    `threshold` (0..1 grey levels) are replaced by that median; everything else is left as it was."""

    type: Literal["classical_median"]
    window: int = Field(7, ge=3, le=15)
    threshold: float = Field(0.08, gt=0, lt=1)


PRIOR_ARCHITECTURES = ("prior_resnet", "masked_prior", "fused_prior", "masked_fused")  # render through prior.pt


class TimmUNetSpec(Strict):
    """UNet whose encoder is any timm model that supports `features_only` (pipeline.models.timm_unet).

    `weights`: optional local file (.safetensors/.pth) of the encoder's pretrained weights,
    relative to the workspace root; nothing is ever downloaded.
    """

    type: Literal["timm_unet"]
    encoder: str = Field("resnet10t", min_length=1)
    weights: str | None = None
    decoder_channels: int = Field(32, ge=4, le=512)


DerainSpec = Annotated[
    Union[ResNetSpec, PriorResNetSpec, MaskedPriorSpec, FusedPriorSpec, MaskedFusedSpec, TimmUNetSpec, ClassicalMedianSpec],
    Field(discriminator="type"),
]


class Prior(Strict):
    # The training keys below apply to vq_autoencoder; a pretrained_autoencoder is not trained.
    model: PriorSpec
    iterations: int = Field(400, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0, lt=1)
    commitment_weight: float = Field(0.25, ge=0)
    discriminator_weight: float = Field(0.0, ge=0)  # patch-discriminator (hinge) loss; 0 = off
    restart_every: int = Field(50, ge=0)  # re-seed unused codes every N steps (first 80%); 0 = never
    val_every: int = Field(100, ge=1)
    threads: int = Field(2, ge=1, le=256)


class TrainRain(Strict):
    """On-the-fly training rain: one entry of `presets` per crop, applied with `probability`."""

    presets: list[RainEntry] = Field(min_length=1)
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
    mask_weight: float = Field(0.1, ge=0)  # BCE of the predicted rain mask against the rain layer (masked_*)
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


# ----------------------------------------------------------------------------- evaluate/register
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


# ----------------------------------------------------------------------------- schedule
class Schedule(Strict):
    """Scheduled retraining (`make serve`). Where the server lives is PREFECT_API_URL's business."""

    cron: Annotated[str, AfterValidator(valid_cron)] = "0 3 * * 1"  # Mondays 03:00; parsed by cronsim
    timezone: Annotated[str, AfterValidator(valid_timezone)] = "UTC"  # an IANA name zoneinfo knows
    refresh_pool: bool = True  # re-ingest the sources; a changed pool becomes a new data.dvc
    commit_results: bool = False  # commit dvc.lock / data.dvc to `results_branch` after a run
    results_branch: str = Field("raincheck/results", min_length=1)


# ----------------------------------------------------------------------------- study
class StudyHeatmap(Strict):
    """Heat maps of the objective: `x` × `y` axes, one panel per combination of `facets`."""

    x: str = "curate.selection.n_backgrounds"
    y: str = "train.rain.presets"
    facets: list[str] = Field(default_factory=lambda: ["curate.selection.policy", "train.model"])


class Study(Strict):
    """The generalization study (`make study`): a grid of dotted params keys, times seeds."""

    grid: dict[str, list[Any]] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)  # overrides for every cell (e.g. shorter training)
    workers: int = Field(1, ge=1, le=64)
    task_runner: Literal["thread", "dask"] = "thread"
    # dask only: the scheduler of an existing cluster (tcp://host:8786); None = a local cluster of `workers`
    dask_address: Optional[str] = None
    # Convergence: a cell whose train log's `convergence_metric` (a val-suite column, dB) moves by more
    # than this over the last fifth of its training is `not converged`; the study then recommends nothing.
    convergence_metric: str = "psnr/val"
    convergence_tolerance_db: float = Field(0.25, gt=0, le=20)
    # Effects: OOD suites averaged into the rain-region / background gain; bootstrap resamples (95% CI).
    ood_suites: list[str] = Field(default_factory=lambda: ["unseen", "screen", "wind", "drops"], min_length=1)
    bootstrap: int = Field(2000, ge=100, le=100000)
    objective: str = "psnr_rain/unseen"
    floor_metric: str = "psnr_bg/unseen"
    floor: float = 20.0
    heatmap: StudyHeatmap = StudyHeatmap()


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
    schedule: Schedule = Schedule()
    study: Optional[Study] = None
    # Required (the gate lives here). Field() says so explicitly: a bare annotation would take
    # ABCMeta.register as its default. Shadows ABCMeta.register on the class only: harmless.
    register: Register = Field()

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        unknown = [s for s in self.train.val_suites if s not in self.synthesize.suites]
        if unknown:
            raise ValueError(f"train.val_suites names {unknown}, not defined under synthesize.suites "
                             f"(defined: {sorted(self.synthesize.suites)})")
        leaking = [s for s in self.train.val_suites if self.synthesize.suites[s].split != "val"]
        if leaking:
            raise ValueError(f"train.val_suites {leaking} are built on the test split: validate on split 'val' suites")
        unknown = [s for s in self.evaluate.suites if s not in self.synthesize.suites]
        if unknown:
            raise ValueError(
                f"evaluate.suites names {unknown}, not defined under synthesize.suites "
                f"(defined: {sorted(self.synthesize.suites)})"
            )
        # A pretrained autoencoder's stride is known once its config is read (the prior step checks it).
        stride = 2**self.prior.model.downsample if self.prior.model.type == "vq_autoencoder" else 1
        if self.curate.patch_size % stride:
            raise ValueError(
                f"curate.patch_size={self.curate.patch_size} must be divisible by "
                f"2**prior.model.downsample={stride}"
            )
        problems = cross_field_errors(self)
        if problems:
            raise ValueError("; ".join(problems))
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
        # Strict, in JSON mode: `true` is no int, `1` no bool, yet `1` is a float and a list a tuple.
        return Params.model_validate_json(as_json(raw), strict=True)
    except ValidationError as error:
        raise ParamsError(_format_error(Path(source), error)) from None


def load_params(path: Path | str = "params.yaml") -> Params:
    """Read and validate a params file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        raw = read_yaml(path.read_text())
    except DuplicateKeyError as error:
        raise ParamsError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, path)


def digest(obj: object) -> str:
    """Stable short sha256 of a JSON-able object (a params section, a manifest row list)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
