"""Result-affecting keys whose code defaults had drifted from params.yaml are required: deleting one
from params.yaml is an error naming it, never a silently different model (issue 12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, parse_params

REPO = Path(__file__).resolve().parents[1]


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
