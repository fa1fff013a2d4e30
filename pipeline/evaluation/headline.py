"""Which suites the summary tables show: named by params, never hard-coded, so a user's own
suite names work.

`evaluate.suites` lists the in-distribution suite first and then the headline out-of-distribution
one (params.yaml and every profile: `seen`, `unseen`, ...). A single suite serves as both.
"""

from __future__ import annotations

from pipeline.config import Params


def headline_suites(params: Params) -> tuple[str, str]:
    """(in-distribution suite, headline out-of-distribution suite) from `evaluate.suites`."""
    suites = params.evaluate.suites
    return suites[0], suites[1] if len(suites) > 1 else suites[0]


def suite_columns(metrics: list[str], suites: list[str]) -> list[str]:
    """`<metric>/<suite>` for each suite (outer) and metric (inner), without repeats."""
    return list(dict.fromkeys(f"{metric}/{suite}" for suite in suites for metric in metrics))
