"""The params loader: good files load, unknown keys and bad values are named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[1]


def _default() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize("profile", sorted((REPO / "profiles").glob("*.yaml")) + [REPO / "params.yaml"], ids=lambda p: p.name)
def test_shipped_params_files_load(profile: Path):
    params = load_params(profile)
    assert params.seed >= 0
    assert set(params.evaluate.suites) <= set(params.synthesize.suites)


def test_unknown_key_is_named():
    raw = _default()
    raw["train"]["learning_rate"] = 0.1
    with pytest.raises(ParamsError, match=r"train\.learning_rate: unknown key"):
        parse_params(raw)


def test_bad_value_names_key_and_value():
    raw = _default()
    raw["train"]["lr"] = -1
    with pytest.raises(ParamsError, match=r"train\.lr: .*greater than 0.*-1"):
        parse_params(raw)


def test_wrong_type_is_named():
    raw = _default()
    raw["seed"] = "abc"
    with pytest.raises(ParamsError, match=r"seed: "):
        parse_params(raw)


def test_unknown_model_type_lists_allowed():
    raw = _default()
    raw["train"]["model"]["type"] = "transformer9000"
    with pytest.raises(ParamsError, match=r"train\.model.*resnet"):
        parse_params(raw)


def test_evaluate_suite_must_exist():
    raw = _default()
    raw["evaluate"]["suites"] = ["seen", "nonexistent"]
    with pytest.raises(ParamsError, match="nonexistent"):
        parse_params(raw)


def test_split_must_sum_to_one():
    raw = _default()
    raw["curate"]["split"] = {"train": 0.5, "val": 0.1, "test": 0.1}
    with pytest.raises(ParamsError, match=r"curate\.split.*sum to 1"):
        parse_params(raw)


def test_missing_and_invalid_yaml_files(tmp_path: Path):
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_missing_register_section_is_an_error():
    raw = _default()
    del raw["register"]
    with pytest.raises(ParamsError, match=r"register: Field required"):
        parse_params(raw)


def test_missing_gates_is_an_error_naming_the_key():
    raw = _default()
    del raw["register"]["gates"]
    with pytest.raises(ParamsError, match=r"register\.gates: Field required"):
        parse_params(raw)


def test_empty_gates_must_be_written_as_none():
    raw = _default()
    raw["register"]["gates"] = {"floors": {}}
    with pytest.raises(ParamsError, match=r"register\.gates.*no rules.*gates: none"):
        parse_params(raw)
    raw["register"]["gates"] = "nothing"
    with pytest.raises(ParamsError, match=r"register\.gates.*'none'.*got 'nothing'"):
        parse_params(raw)
    raw["register"]["gates"] = "none"
    assert parse_params(raw).register.rules is None
