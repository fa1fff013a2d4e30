"""Typed, strict view of params.yaml.

Every section of params.yaml has a model here. Unknown keys, wrong types and out-of-range values
raise :class:`ParamsError`, whose message names the file, the dotted key and what is allowed.
Models are frozen: code never mutates its configuration. A params file may be an overlay
(`extends: cpu`, then only the keys that differ; pipeline/params/overlay.py): it is merged onto
its base before it is validated.

The sections' models live in pipeline/params/ (one module per section); this module puts them
together into :class:`Params`, reads the file, and re-exports every model under its old name.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline import layout
from pipeline.params.base import ParamsError, Strict
from pipeline.params.curate import COMPLEXITY_MEASURES, SELECTION_POLICIES, Curate, CurationChecks, Selection, Split
from pipeline.params.evaluate import (
    Evaluate,
    FolderSuite,
    Gates,
    PairedFolderSuite,
    Register,
    UnpairedFolderSuite,
)
from pipeline.params.ingest import DebianSource, FolderSource, Ingest, PypiSource, Source
from pipeline.params.models import (
    PRIOR_ARCHITECTURES,
    ClassicalMedianSpec,
    DerainSpec,
    FusedPriorSpec,
    MaskedFusedSpec,
    MaskedPriorSpec,
    PretrainedAutoencoderSpec,
    PriorResNetSpec,
    PriorSpec,
    ResNetSpec,
    TimmUNetSpec,
    VQAutoencoderSpec,
)
from pipeline.params.overlay import merge_into, resolve_chain
from pipeline.params.rain import Haze, RainConfig
from pipeline.params.study import Schedule, Study, StudyHeatmap
from pipeline.params.synthesis import PRESETS, SUITE_GENERATORS, RainEntry, SuiteSpec, Synthesize
from pipeline.params.training import Prior, Train, TrainRain
from pipeline.params_checks import DuplicateKeyError, as_json, cross_field_errors, read_yaml

__all__ = [
    "COMPLEXITY_MEASURES", "PRESETS", "PRIOR_ARCHITECTURES", "SELECTION_POLICIES", "SUITE_GENERATORS",
    "ClassicalMedianSpec", "Curate", "CurationChecks", "DebianSource", "DerainSpec", "Evaluate",
    "FolderSource", "FolderSuite", "FusedPriorSpec", "Gates", "Haze", "Ingest", "MaskedFusedSpec",
    "MaskedPriorSpec", "PairedFolderSuite", "Params", "ParamsError", "Paths", "PretrainedAutoencoderSpec",
    "Prior", "PriorResNetSpec", "PriorSpec", "PypiSource", "RainConfig", "RainEntry", "Register",
    "ResNetSpec", "Schedule", "Selection", "Source", "Split", "Strict", "Study", "StudyHeatmap",
    "SuiteSpec", "Synthesize", "TimmUNetSpec", "Train", "TrainRain", "UnpairedFolderSuite",
    "VQAutoencoderSpec", "digest", "load_params", "parse_params", "read_params",
]


# `register` is both a step name (so a params section) and an ABCMeta method name.
warnings.filterwarnings("ignore", message='Field name "register" in "Params" shadows', category=UserWarning)


# ----------------------------------------------------------------------------- paths
class Paths(Strict):
    pool: str = "data"
    curated: str = "build/curated"
    suites: str = "build/suites"
    prior: str = "build/prior"
    model: str = "build/model"
    evaluation: str = "build/evaluation"
    registry: str = "build/registry"


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


def _format_error(source: Path | str, error: ValidationError) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check its spelling; see params.yaml in the repository)"
        elif "input" in item and not isinstance(item["input"], dict):
            message += f" (got {item['input']!r})"
        lines.append(f"  {key}: {message}")
    if " (extends " in str(source) and any(item["type"] == "extra_forbidden" for item in error.errors()):
        lines.append("  (an unknown key may come from the base: name its mapping under `replace:` in the overlay "
                     "to drop the base's keys there)")
    return "\n".join(lines)


def parse_params(raw: dict, source: Path | str = layout.PARAMS) -> Params:
    """Validate an already-loaded mapping; raises ParamsError naming each bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: top level must be a mapping of sections, got {type(raw).__name__}")
    try:
        # Strict, in JSON mode: `true` is no int, `1` no bool, yet `1` is a float and a list a tuple.
        return Params.model_validate_json(as_json(raw), strict=True)
    except ValidationError as error:
        raise ParamsError(_format_error(source, error)) from None


def _read_one(path: Path) -> object:
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        return read_yaml(path.read_text())
    except DuplicateKeyError as error:
        raise ParamsError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None


def _merged(path: Path) -> tuple[object, str]:
    """(raw params, source label): an overlay's chain merged from its root base; the label names
    the file and, for an overlay, its bases (what validation errors start with)."""
    chain = resolve_chain(path, _read_one)
    _, _, merged = chain[0]
    for file, replace, params in chain[1:]:
        if not isinstance(merged, dict) or not isinstance(params, dict):
            raise ParamsError(f"{file}: top level must be a mapping of sections")
        merge_into(merged, params, replace)
    bases = " <- ".join(str(file) for file, _, _ in reversed(chain[:-1]))  # nearest base first
    label = f"{path} (extends {bases})" if bases else str(path)
    return merged, label


def read_params(path: Path | str = layout.PARAMS) -> object:
    """The raw (unvalidated) params of a file; an overlay (`extends:`) comes merged onto its base(s)."""
    return _merged(Path(path))[0]


def load_params(path: Path | str = layout.PARAMS) -> Params:
    """Read and validate a params file (an overlay is merged onto its base first, see read_params)."""
    raw, label = _merged(Path(path))
    return parse_params(raw, label)


def digest(obj: object) -> str:
    """Stable short sha256 of a JSON-able object (a params section, a manifest row list)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
