"""The promotion gate: a pure function from metrics and rules to a decision with reasons.

Metric keys are `<metric>/<suite>` as written by the evaluate step. All gated metrics are
higher-is-better (PSNR in dB, gains in dB, SSIM); a missing or NaN metric fails its rule rather
than passing silently.
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
    many units (dB) the candidate may fall below the champion.
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
            reasons.append(f"ok   {key}: champion has no value, rule skipped")
        elif not _finite(value):
            passed = False
            reasons.append(f"FAIL {key}: missing or NaN (champion {reference:.3f})")
        elif value < reference - tolerance:
            passed = False
            reasons.append(f"FAIL {key} = {value:.3f} < champion {reference:.3f} - {tolerance:g}")
        else:
            reasons.append(f"ok   {key} = {value:.3f} vs champion {reference:.3f} (tolerance {tolerance:g})")
    return Decision(passed, reasons)
