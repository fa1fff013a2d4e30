"""The params loader: good files load, unknown keys and bad values are named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, load_params, parse_params

REPO = Path(__file__).resolve().parents[2]


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


# ----------------------------------------------------------------------------- overlays (issue 12)
def _overlay(tmp_path: Path, text: str, name: str = "mine.yaml") -> Path:
    """`text` as an overlay next to a copy of profiles/cpu.yaml."""
    (tmp_path / "cpu.yaml").write_bytes((REPO / "profiles" / "cpu.yaml").read_bytes())
    path = tmp_path / name
    path.write_text(text)
    return path


def test_overlay_merges_mappings_and_replaces_lists_and_values(tmp_path: Path):
    from pipeline.config import read_params

    path = _overlay(tmp_path, "extends: cpu\ntrain:\n  model: {blocks: 3}\n  iterations: 7\n  milestones: [0.5]\n"
                              "evaluate:\n  suites: [seen]\n")
    raw, cpu = read_params(path), _default()
    assert "extends" not in raw and "replace" not in raw
    assert raw["train"]["model"] == {**cpu["train"]["model"], "blocks": 3}  # merged key by key
    assert raw["train"]["milestones"] == [0.5] and raw["evaluate"]["suites"] == ["seen"]  # replaced
    assert {k: v for k, v in raw["train"].items() if k not in ("model", "iterations", "milestones")} == \
        {k: v for k, v in cpu["train"].items() if k not in ("model", "iterations", "milestones")}
    params = load_params(path)
    assert (params.train.iterations, params.train.model.bright_gate, params.train.model.blocks) == (7, 21, 3)


def test_overlay_replace_drops_the_base_keys_of_a_mapping(tmp_path: Path):
    text = "extends: cpu\ntrain:\n  model: {type: resnet, channels: 8, blocks: 1}\n"
    with pytest.raises(ParamsError) as error:  # merged: masked_prior's keys land in a resnet spec
        load_params(_overlay(tmp_path, text))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'mine.yaml'} (extends {tmp_path / 'cpu.yaml'}): invalid parameters")
    assert "train.model.resnet.mask_channels: unknown key" in message and "replace:" in message
    params = load_params(_overlay(tmp_path, "replace: [train.model]\n" + text))
    assert params.train.model.model_dump() == {"type": "resnet", "channels": 8, "blocks": 1}


@pytest.mark.parametrize("text, named", [
    ("extends: cpu\ntrain:\n  learning_rate: 0.1\n", r"mine\.yaml \(extends .*cpu\.yaml\): invalid parameters\n  train\.learning_rate: unknown key"),
    ("extends: cpu\ntrain:\n  lr: -1\n", r"mine\.yaml \(extends .*\n  train\.lr: .*greater than 0"),
    ("extends: gpux\n", r"mine\.yaml: extends: 'gpux': no file .*gpux\.yaml \(in .*: cpu, mine\)"),
    ("extends: [cpu]\n", r"mine\.yaml: extends: must name a base params file"),
    ("extends: cpu\nreplace: [train.modle]\ntrain:\n  model: {type: resnet}\n", r"mine\.yaml: replace: 'train\.modle' is not a key this file sets"),
    ("extends: cpu\nreplace: [train.lr]\ntrain:\n  lr: 0.1\n", r"mine\.yaml: replace: 'train\.lr' is not a mapping"),
    ("seed: 1\nreplace: [train]\n", r"mine\.yaml: replace: only an overlay"),
    ("extends: cpu\ntrain:\n  lr: 0.1\n  lr: 0.2\n", r"mine\.yaml: line 4: duplicate key 'lr'"),
])
def test_overlay_errors_name_the_overlay_and_the_key(tmp_path: Path, text: str, named: str):
    with pytest.raises(ParamsError, match=named):
        load_params(_overlay(tmp_path, text))


def test_overlay_chains_and_cycles(tmp_path: Path):
    _overlay(tmp_path, "extends: cpu\ntrain:\n  iterations: 9\n  lr: 0.01\n", "mid.yaml")
    top = _overlay(tmp_path, "extends: mid\ntrain:\n  iterations: 3\n", "top.yaml")
    params = load_params(top)
    assert (params.train.iterations, params.train.lr, params.train.batch_size) == (3, 0.01, 8)
    (tmp_path / "mid.yaml").write_text("extends: top\n")
    with pytest.raises(ParamsError, match=r"top\.yaml: extends: a cycle \(.*top\.yaml -> .*mid\.yaml -> .*top\.yaml\)"):
        load_params(top)
