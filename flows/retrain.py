"""The retraining flow: pool -> DVC stages -> MLflow registration and gate -> `dvc push`.

DVC stays the executor of record (cache, dvc.lock, skipping unchanged stages): each stage is one
Prefect task that runs `dvc repro <stage>`. Prefect adds run history, retries on the steps that
can fail transiently (registry calls, push), artifacts and schedules.

Run it: `make run` (or `python -m flows retrain [--root DIR] [--refresh-pool]`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

STAGES = ("curate", "synthesize", "prior", "train", "evaluate")


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's own error output."""


def _run(command: list[str], root: Path, what: str) -> str:
    """Run a command in the workspace, streaming its output to the Prefect log; returns it."""
    logger = get_run_logger()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        line = line.rstrip()
        # tqdm redraws with carriage returns: log only the final state of each bar line.
        line = line.rsplit("\r", 1)[-1]
        if line:
            lines.append(line)
            logger.info("%s | %s", what, line)
    if process.wait() != 0:
        tail = "\n".join(lines[-25:])
        raise StageFailed(f"{what} failed (exit {process.returncode}): {' '.join(command)}\n{tail}")
    return "\n".join(lines)


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


@task(name="ingest")
def refresh_pool(root: Path, params_file: str, refresh: bool) -> str:
    """Build the pool if it is missing (or when asked), then record it in data.dvc."""
    from pipeline.config import load_params

    pool = root / load_params(root / params_file).paths.pool
    if refresh or not (pool / "manifest.csv").is_file():
        _run([sys.executable, "-m", "pipeline", "ingest", "--params", params_file], root, "ingest")
    _run(_dvc("add", "--quiet", str(pool.relative_to(root))), root, "dvc add")
    return (root / f"{pool.relative_to(root)}.dvc").read_text()


@task(name="stage")
def run_stage(root: Path, stage: str) -> str:
    """`dvc repro <stage>`: runs the stage only if its deps, params or code changed."""
    return _run(_dvc("repro", stage), root, stage)


@task(name="register", retries=2, retry_delay_seconds=[5, 30])
def register(root: Path, params_file: str, flow_run_id: str | None) -> dict:
    from pipeline.config import load_params
    from pipeline.registry.register import run_register

    return run_register(load_params(root / params_file), root, flow_run_id=flow_run_id)


@task(name="push", retries=3, retry_delay_seconds=[5, 20, 60])
def push(root: Path) -> str:
    """Push the pool and every stage output to the DVC remote."""
    return _run(_dvc("push", "--quiet"), root, "dvc push")


@flow(name="retrain", log_prints=True)
def retrain(root: str = ".", params_file: str = "params.yaml", refresh_pool_first: bool = False) -> dict:
    """The whole pipeline in one workspace; returns the evaluation metrics and registration."""
    from prefect.runtime import flow_run

    from pipeline.config import load_params
    from pipeline.io import read_json
    from pipeline.reporting import metrics_markdown, registration_lines
    from pipeline.workspace import workspace_lock

    workspace = Path(root).resolve()
    params = load_params(workspace / params_file)
    with workspace_lock(workspace):
        refresh_pool(workspace, params_file, refresh_pool_first)
        for stage in STAGES:
            run_stage.with_options(name=stage)(workspace, stage)
        metrics = read_json(workspace / params.paths.evaluation / "metrics.json")
        registration = register(workspace, params_file, str(flow_run.id) if flow_run.id else None)
        push(workspace)
    create_markdown_artifact(
        key="retrain-summary",
        markdown="## raincheck retrain\n\n" + metrics_markdown(metrics) + "\n\n" + "\n\n".join(registration_lines(registration)),
        description="Evaluation metrics and the registry decision",
    )
    return {"metrics": metrics, "registration": registration}


def main(root: Path, params_file: str = "params.yaml", refresh: bool = False) -> int:
    """Run the flow in `root` and print the summary (the environment is set by flows.__main__)."""
    from pipeline.workspace import prepare_workspace, print_summary

    prepare_workspace(root)
    result = retrain(str(root), params_file, refresh)
    print_summary(root, params_file, result)
    return 0
