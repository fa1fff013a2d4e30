"""Checks on params.yaml beyond what one pydantic field can say, kept out of pipeline/config.py.

- Reading: :func:`read_yaml` refuses duplicate mapping keys (PyYAML keeps the last one silently,
  DVC refuses the file) and reads `1e-3` as a float, as YAML 1.2 and DVC do.
- Cross-field: :func:`cross_field_errors` checks `train.crop_size` against `curate.patch_size`
  and the model's stride when the params load, not inside a DVC stage after DVC removed its outputs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from pipeline import layout
from pipeline.params.models import PRIOR_ARCHITECTURES, autoencoder_stride


class DuplicateKeyError(yaml.YAMLError):
    """A mapping in the params file names one key twice; str() says which key and both lines."""


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKeyError on a repeated key in any mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are meant to be overridden by the keys beside them
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1  # marks count from 0, editors from 1
            try:
                seen = first_line.get(key)
            except TypeError:
                continue  # an unhashable key: SafeLoader itself reports it below
            if seen is not None:
                raise DuplicateKeyError(f"line {line}: duplicate key {key!r} (first at line {seen}); keep only one")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML) reads `1e-3` as a string; YAML 1.2 (ruamel, which DVC uses) as a float. Strict
# params would then refuse `lr: 1e-3`, so read exponents without a dot as floats too.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(text: str) -> object:
    """Parse YAML text with UniqueKeyLoader (raises yaml.YAMLError, DuplicateKeyError included)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def as_json(raw: object) -> str:
    """The loaded mapping as JSON, so pydantic validates it strictly in JSON mode.

    JSON mode keeps what YAML users write working (lists for tuples, `1` where a float is
    expected) while refusing `true` for an int, `1` for a bool and `"5"` for a number. YAML dates
    and other non-JSON scalars become strings (and are then refused where a number is expected).
    """
    return json.dumps(raw, default=str, allow_nan=True)


# ----------------------------------------------------------------------------- cross-field
def derain_stride(params) -> tuple[int | None, str]:
    """(stride, where it comes from) of params.train.model: input sides must be multiples of it.

    Rendering through the prior means the prior's stride (2**prior.model.downsample for the VQ
    autoencoder, the diffusers config for a pre-trained one); resnet and classical_median work at
    full resolution (1). A timm encoder's stride is only known once timm builds it: None (the
    train step checks it).
    """
    model, prior = params.train.model, params.prior.model
    if model.type not in PRIOR_ARCHITECTURES:
        return (None, "timm encoder") if model.type == "timm_unet" else (1, "full resolution")
    if prior.type == "vq_autoencoder":
        return 2**prior.downsample, f"2**prior.model.downsample with prior.model.downsample={prior.downsample}"
    config = Path(prior.path).expanduser() / layout.AUTOENCODER_CONFIG
    try:
        return autoencoder_stride(prior.kind, json.loads(config.read_text())), f"the downsampling of {config}"
    except (OSError, ValueError, KeyError, TypeError):
        return None, "unreadable config"  # the prior step names what is wrong with the directory


def cross_field_errors(params) -> list[str]:
    """One-line problems between sections (empty when consistent): crop size vs patches and stride.

    (curate.patch_size against the prior's stride is checked in Params itself.)
    """
    train, curate = params.train, params.curate
    errors = []
    if train.crop_size > curate.patch_size:
        errors.append(
            f"train.crop_size={train.crop_size} is larger than the training patches "
            f"({curate.patch_size}px, curate.patch_size): use a crop_size <= {curate.patch_size}"
        )
    stride, why = derain_stride(params)
    if stride and train.crop_size % stride:
        allowed = [size for size in range(stride, curate.patch_size + 1, stride)][-3:]
        errors.append(
            f"train.crop_size={train.crop_size} must be divisible by the {train.model.type} model's stride "
            f"{stride} ({why}); e.g. {', '.join(map(str, allowed)) or stride}"
        )
    return errors
