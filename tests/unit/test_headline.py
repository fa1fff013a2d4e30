"""The summary tables name the suites params names: no `seen`/`unseen` hard-coded in the library."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import load_params
from pipeline.evaluation.headline import headline_suites, suite_columns
from pipeline.registry.commands import key_metrics

ROOT = Path(__file__).resolve().parents[2]


def _with_suites(suites: list[str]):
    params = load_params(ROOT / "params.yaml")
    return params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"suites": suites})})


def test_default_params_keep_the_registry_columns():
    assert key_metrics(load_params(ROOT / "params.yaml")) == [
        "psnr_rain/unseen", "psnr_bg/unseen", "psnr_rain_gain/unseen", "psnr/seen", "psnr/unseen"]


def test_a_users_suite_names_become_the_columns():
    params = _with_suites(["indist", "heavy", "clean"])
    assert headline_suites(params) == ("indist", "heavy")
    assert key_metrics(params) == ["psnr_rain/heavy", "psnr_bg/heavy", "psnr_rain_gain/heavy", "psnr/indist", "psnr/heavy"]


def test_one_suite_serves_as_both_without_repeated_columns():
    params = _with_suites(["mine"])
    assert headline_suites(params) == ("mine", "mine")
    assert key_metrics(params) == ["psnr_rain/mine", "psnr_bg/mine", "psnr_rain_gain/mine", "psnr/mine"]
    assert suite_columns(["a", "b"], ["x", "x"]) == ["a/x", "b/x"]
