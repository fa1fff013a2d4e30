"""Result-affecting keys have no code default that differs from params.yaml (issue 12): the keys whose
defaults had drifted are required (deleting one is an error naming it), and every other key that
profiles/cpu.yaml sets has a code default equal to cpu.yaml's value (checked generically below)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import ParamsError, parse_params

REPO = Path(__file__).resolve().parents[2]


def _default() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("key, named", [
    ("prior.model.latent_dim", r"prior\.model\.vq_autoencoder\.latent_dim: Field required"),
    ("prior.model.downsample", r"prior\.model\.vq_autoencoder\.downsample: Field required"),
    ("prior.iterations", r"missing key prior\.iterations: required to train a vq_autoencoder prior"),
    ("prior.lr", r"missing key prior\.lr: required to train a vq_autoencoder prior"),
])
def test_deleting_a_prior_key_names_it(key: str, named: str):
    raw = _default()
    *parents, last = key.split(".")
    section = raw
    for part in parents:
        section = section[part]
    del section[last]
    with pytest.raises(ParamsError, match=named):
        parse_params(raw)


def test_prior_resnet_blocks_is_required():
    raw = _default()
    raw["train"]["model"] = {"type": "prior_resnet"}
    with pytest.raises(ParamsError, match=r"train\.model\.prior_resnet\.blocks: Field required"):
        parse_params(raw)
    raw["train"]["model"]["blocks"] = 2
    assert parse_params(raw).train.model.blocks == 2


# ----------------------------------------------------------------------------- code defaults
# Keys that only say how the run is watched, never what it computes: their code defaults may differ
# from cpu.yaml's. `val_every` sets how often the validation curve is measured (no checkpoint is
# chosen from it).
PLUMBING = {"prior.val_every", "train.val_every"}


def _defaults_against(instance: BaseModel, raw: dict, at: str, seen: list[str]) -> list[str]:
    """Every field of `instance` that `raw` (its part of cpu.yaml) sets and whose model has a default:
    '<key>: default X, cpu.yaml Y' where they differ. Nested models are walked (a discriminated union
    by the variant cpu.yaml uses); list and dict entries are not: their defaults are per entry.
    A None default is left to the caller (None may stand for "required by a validator")."""
    problems = []
    for name, field in type(instance).model_fields.items():
        if name not in raw:
            continue
        key, value = f"{at}{name}", getattr(instance, name)
        if not field.is_required():
            seen.append(key)
            default = field.get_default(call_default_factory=True)
            # An empty list/dict default means "none of these" (evaluate.folders, train.val_suites, gate rules).
            collection = isinstance(default, (list, dict)) and not default
            if default != value and key not in PLUMBING and not collection:
                problems.append(key if default is None else f"{key}: code default {default!r}, profiles/cpu.yaml {value!r}")
        if isinstance(value, BaseModel) and isinstance(raw[name], dict):
            problems += _defaults_against(value, raw[name], f"{key}.", seen)
    return problems


def _without(raw: dict, key: str) -> dict:
    raw = copy.deepcopy(raw)
    *parents, last = key.split(".")
    section = raw
    for part in parents:
        section = section[part]
    del section[last]
    return raw


def test_code_defaults_of_cpu_yaml_keys_equal_its_values():
    """A result-affecting key has no code default, or cpu.yaml's value: deleting it from params.yaml
    never trains another model. Checked for every key cpu.yaml sets, through every nested model."""
    raw = yaml.safe_load((REPO / "profiles" / "cpu.yaml").read_text())
    seen: list[str] = []
    problems = _defaults_against(parse_params(raw), raw, "", seen)
    required_by_validator = [key for key in problems if ":" not in key]  # a None default
    for key in required_by_validator:  # None must mean "required": deleting the key is refused, naming it
        with pytest.raises(ParamsError, match=rf"missing key .*{re.escape(key)}"):
            parse_params(_without(raw, key))
    problems = [p for p in problems if ":" in p]
    assert not problems, "code defaults differ from profiles/cpu.yaml:\n" + "\n".join(problems)
    # The walk reached the nested models (not a vacuous pass).
    assert {"curate.eval_crops", "curate.selection.policy", "train.model.bright_gate", "train.mask_weight",
            "prior.model.codebook_size", "train.rain.probability", "schedule.cron"} <= set(seen)
    assert set(required_by_validator) == {"prior.iterations", "prior.lr"} and len(seen) > 60


def test_a_drifted_default_is_caught():
    """The check above fails on a default that differs from cpu.yaml (here: train.iterations)."""
    raw = yaml.safe_load((REPO / "profiles" / "cpu.yaml").read_text())
    raw["train"]["iterations"] = 1234
    raw["train"]["model"]["bright_gate"] = 5
    problems = [p for p in _defaults_against(parse_params(raw), raw, "", []) if ":" in p]
    assert problems == ["train.model.bright_gate: code default 21, profiles/cpu.yaml 5",
                        "train.iterations: code default 2000, profiles/cpu.yaml 1234"]
