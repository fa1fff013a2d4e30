"""The promotion gate: a pure function from metrics and rules to a decision with reasons.

Metric keys are `<metric>/<suite>` as written by the evaluate step. All gated metrics are
higher-is-better (PSNR in dB, gains in dB, SSIM). The gate fails closed: a rule naming a metric
that the candidate (or, for a champion rule, the champion) does not have is an error
(:func:`check_rules`, a typo or a suite that was never evaluated), and a NaN value fails its rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping


@dataclass(frozen=True)
class Decision:
    """`promote` is True only when every rule passed; `reasons` explains each rule's outcome."""

    promote: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons)}


class GateError(ValueError):
    """A gate rule cannot be applied; the message names the rule and the metrics that exist."""


def _missing(rule: str, key: str, where: str, metrics: Mapping[str, float]) -> str:
    """One line: the rule, what is missing, and what exists (a typo is then easy to see)."""
    metric = key.split("/", 1)[0]
    same_metric = sorted(k for k in metrics if k.split("/", 1)[0] == metric)
    suites = sorted({k.split("/", 1)[1] for k in metrics if "/" in k and not k.startswith("train/")})
    known = f"{metric} exists for: {', '.join(same_metric)}" if same_metric else f"no {metric!r} metric at all"
    return f"gate rule register.gates.{rule}.{key}: {where} has no metric {key!r} ({known}; suites evaluated: {', '.join(suites) or 'none'})"


def check_rules(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    floors: Mapping[str, float],
    champion_tolerance: Mapping[str, float],
    champion_label: str = "the champion",
) -> None:
    """Raise GateError if a rule names a metric the candidate or the champion lacks.

    champion None (first registration): champion rules are not checked against it.
    """
    for key in sorted(floors):
        if key not in candidate:
            raise GateError(_missing("floors", key, "the candidate", candidate))
    for key in sorted(champion_tolerance):
        if key not in candidate:
            raise GateError(_missing("champion_tolerance", key, "the candidate", candidate))
        if champion is not None and key not in champion:
            raise GateError(_missing("champion_tolerance", key, champion_label, champion))


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def decide(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    floors: Mapping[str, float],
    champion_tolerance: Mapping[str, float],
) -> Decision:
    """Promote when every floor is met and the candidate is not worse than the champion.

    candidate / champion: metric name -> value (champion None on the first run: relative rules
    then pass with a note). floors: metric -> minimum value. champion_tolerance: metric -> how
    many units (dB) the candidate may fall below the champion. Call check_rules first: a key
    missing here still fails its rule, never passes it.
    """
    reasons: list[str] = []
    passed = True
    for key, floor in sorted(floors.items()):
        value = candidate.get(key)
        if not _finite(value):
            passed = False
            reasons.append(f"FAIL {key}: missing or NaN (floor {floor:g})")
        elif value < floor:
            passed = False
            reasons.append(f"FAIL {key} = {value:.3f} < floor {floor:g}")
        else:
            reasons.append(f"ok   {key} = {value:.3f} >= floor {floor:g}")
    if champion is None:
        reasons.append("ok   no champion yet: relative rules not applicable")
        return Decision(passed, reasons)
    for key, tolerance in sorted(champion_tolerance.items()):
        value, reference = candidate.get(key), champion.get(key)
        if not _finite(reference):
            passed = False  # fail closed: no reference value is not a pass
            reasons.append(f"FAIL {key}: champion has no finite value")
        elif not _finite(value):
            passed = False
            reasons.append(f"FAIL {key}: missing or NaN (champion {reference:.3f})")
        elif value < reference - tolerance:
            passed = False
            reasons.append(f"FAIL {key} = {value:.3f} < champion {reference:.3f} - {tolerance:g}")
        else:
            reasons.append(f"ok   {key} = {value:.3f} vs champion {reference:.3f} (tolerance {tolerance:g})")
    return Decision(passed, reasons)
