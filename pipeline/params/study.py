"""params.yaml `schedule` (scheduled retraining) and `study` (the generalization study).

`schedule.cron` is parsed with cronsim and `schedule.timezone` looked up with zoneinfo when the
params load, so `make serve` never starts a runner that dies at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field

from pipeline.params.base import Strict


# ----------------------------------------------------------------------------- schedule
def valid_cron(cron: str) -> str:
    """A 5-field cron expression that cronsim can schedule (minute hour day month weekday).

    cronsim is the light cron parser that comes with Prefect (through pydocket); Prefect's own
    croniter is vendored inside it, and importing it would load all of Prefect on every params
    load. cronsim is the stricter of the two: it also refuses dates that never occur (`31 2`).
    """
    import cronsim

    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(f"cron must have 5 fields (minute hour day month weekday), got {cron!r}")
    try:
        cronsim.CronSim(cron, datetime(2000, 1, 1))
    except cronsim.CronSimError as error:
        raise ValueError(f"{cron!r} is not a valid cron expression ({error}); e.g. '0 3 * * 1' = Mondays 03:00") from None
    return cron


def valid_timezone(name: str) -> str:
    """An IANA time zone name that zoneinfo knows (e.g. UTC, Europe/Berlin)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as UTC or Europe/Berlin") from None
    return name


class Schedule(Strict):
    """Scheduled retraining (`make serve`). Where the server lives is PREFECT_API_URL's business."""

    cron: Annotated[str, AfterValidator(valid_cron)] = "0 3 * * 1"  # Mondays 03:00; parsed by cronsim
    timezone: Annotated[str, AfterValidator(valid_timezone)] = "UTC"  # an IANA name zoneinfo knows
    refresh_pool: bool = True  # re-ingest the sources; a changed pool becomes a new data.dvc
    commit_results: bool = False  # commit dvc.lock / data.dvc to `results_branch` after a run
    results_branch: str = Field("raincheck/results", min_length=1)


# ----------------------------------------------------------------------------- study
class StudyHeatmap(Strict):
    """Heat maps of the objective: `x` × `y` axes, one panel per combination of `facets`."""

    x: str = "curate.selection.n_backgrounds"
    y: str = "train.rain.presets"
    facets: list[str] = Field(default_factory=lambda: ["curate.selection.policy", "train.model"])


class Study(Strict):
    """The generalization study (`make study`): a grid of dotted params keys, times seeds."""

    grid: dict[str, list[Any]] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)  # overrides for every cell (e.g. shorter training)
    workers: int = Field(1, ge=1, le=64)
    task_runner: Literal["thread", "dask"] = "thread"
    # dask only: the scheduler of an existing cluster (tcp://host:8786); None = a local cluster of `workers`
    dask_address: Optional[str] = None
    # Convergence: a cell whose train log's `convergence_metric` (a val-suite column, dB) moves by more
    # than this over the last fifth of its training is `not converged`; the study then recommends nothing.
    convergence_metric: str = "psnr/val"
    convergence_tolerance_db: float = Field(0.25, gt=0, le=20)
    # Effects: OOD suites averaged into the rain-region / background gain; bootstrap resamples (95% CI).
    ood_suites: list[str] = Field(default_factory=lambda: ["unseen", "screen", "wind", "drops"], min_length=1)
    bootstrap: int = Field(2000, ge=100, le=100000)
    objective: str = "psnr_rain/unseen"
    floor_metric: str = "psnr_bg/unseen"
    floor: float = 20.0
    heatmap: StudyHeatmap = StudyHeatmap()
