"""The promotion rule is pure: metrics and rules in, a decision with reasons out."""

from __future__ import annotations

import math

from pipeline.registry.promotion import decide

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


def test_champion_without_metric_skips_rule():
    decision = decide(GOOD, {}, FLOORS, TOLERANCE)
    assert decision.promote
    assert any("rule skipped" in r for r in decision.reasons)
