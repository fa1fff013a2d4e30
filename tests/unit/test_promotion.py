"""The promotion rule is pure: metrics and rules in, a decision with reasons out; it fails closed."""

from __future__ import annotations

import math

import pytest

from pipeline.registry.promotion import GateError, check_rules, decide

FLOORS = {"psnr_rain_gain/unseen": 0.0, "psnr_bg/unseen": 25.0}
TOLERANCE = {"psnr_rain/unseen": 0.5}
GOOD = {"psnr_rain_gain/unseen": 2.0, "psnr_bg/unseen": 30.0, "psnr_rain/unseen": 24.0}


def test_first_run_promotes_when_floors_pass():
    decision = decide(GOOD, None, FLOORS, TOLERANCE)
    assert decision.promote
    assert any("no champion yet" in r for r in decision.reasons)


def test_floor_failure_blocks_and_names_metric():
    decision = decide({**GOOD, "psnr_bg/unseen": 20.0}, None, FLOORS, TOLERANCE)
    assert not decision.promote
    assert any(r.startswith("FAIL psnr_bg/unseen") for r in decision.reasons)


def test_missing_or_nan_metric_fails():
    assert not decide({"psnr_bg/unseen": 30.0}, None, FLOORS, {}).promote
    assert not decide({**GOOD, "psnr_rain_gain/unseen": math.nan}, None, FLOORS, {}).promote


def test_champion_tolerance():
    champion = {"psnr_rain/unseen": 24.3}
    assert decide(GOOD, champion, FLOORS, TOLERANCE).promote  # 0.3 dB worse: within 0.5
    worse = {**GOOD, "psnr_rain/unseen": 23.7}
    decision = decide(worse, champion, FLOORS, TOLERANCE)
    assert not decision.promote
    assert any("champion 24.300" in r for r in decision.reasons)


def test_champion_without_metric_fails_rule_instead_of_skipping():
    decision = decide(GOOD, {}, FLOORS, TOLERANCE)
    assert not decision.promote
    assert any(r.startswith("FAIL psnr_rain/unseen") for r in decision.reasons)


def test_typo_in_champion_rule_is_an_error_naming_the_rule():
    with pytest.raises(GateError, match=r"register\.gates\.champion_tolerance\.psnr_rain/unsen: the candidate has no metric"):
        check_rules(GOOD, {"psnr_rain/unseen": 24.0}, FLOORS, {"psnr_rain/unsen": 0.5})


def test_floor_on_a_suite_never_evaluated_is_an_error():
    with pytest.raises(GateError, match=r"register\.gates\.floors\.psnr/clean: .*no .psnr. metric at all; suites evaluated: unseen"):
        check_rules(GOOD, None, {**FLOORS, "psnr/clean": 20.0}, {})


def test_champion_lacking_a_ruled_metric_is_an_error_naming_it():
    with pytest.raises(GateError, match=r"champion_tolerance\.psnr_rain/unseen: champion version 3 has no metric"):
        check_rules(GOOD, {"psnr_bg/unseen": 30.0}, FLOORS, TOLERANCE, champion_label="champion version 3")


def test_rules_that_exist_pass_the_check():
    check_rules(GOOD, GOOD, FLOORS, TOLERANCE)  # no exception
    with pytest.raises(GateError):  # the candidate must have champion-rule keys even on a first run
        check_rules(GOOD, None, {}, {"psnr_rain/seen": 0.5})
