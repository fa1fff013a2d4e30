"""Deployments served by `make serve`: kept apart from the flow code, built from params.yaml."""

from __future__ import annotations

from pathlib import Path

from pipeline import layout
from pipeline.config import load_params

RETRAIN_DEPLOYMENT = "scheduled-retrain"


def build_deployments(root: Path, params_file: str = layout.PARAMS) -> list:
    """The RunnerDeployments to serve: scheduled retraining (cron from params.schedule)."""
    from prefect.schedules import Cron

    from flows.retrain import retrain

    schedule = load_params(Path(root) / params_file).schedule
    return [
        retrain.to_deployment(
            name=RETRAIN_DEPLOYMENT,
            schedule=Cron(schedule.cron, timezone=schedule.timezone),
            concurrency_limit=1,  # a second trigger waits; the workspace lock guards the rest
            parameters={
                "root": str(Path(root).resolve()),
                "params_file": params_file,
                "refresh_pool_first": schedule.refresh_pool,
                "commit_results": schedule.commit_results,
            },
            description="Refresh the pool, run the DVC stages, gate and register, push.",
            tags=["raincheck"],
        )
    ]


def serve_forever(root: Path, params_file: str = layout.PARAMS) -> None:
    """Register the deployments on PREFECT_API_URL and execute their runs (blocks)."""
    from prefect import serve

    serve(*build_deployments(root, params_file), pause_on_shutdown=False)
