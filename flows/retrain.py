"""The retraining flow: pool -> DVC stages -> MLflow registration and gate -> `dvc push`.

DVC stays the executor of record (cache, dvc.lock, skipping unchanged stages): each stage is one
Prefect task that runs `dvc repro <stage>`. Prefect adds run history, retries on the steps that
can fail transiently (registry calls, push), artifacts, notifications and schedules.

Run it: `make run` (or `python -m flows retrain [--root DIR] [--refresh-pool] [--force]`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipeline import layout
from pipeline.stages import DVC_STAGES as STAGES  # one task per DVC stage, in dvc.yaml's order


class StageFailed(RuntimeError):
    """A DVC stage exited non-zero; the message carries the stage's own error output."""


def subprocess_env(env_extra: dict[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with `env_extra` applied (a None value removes the variable),
    and this interpreter's bin/ first on PATH, for the stages' subprocesses."""
    env = {**os.environ, **(env_extra or {})}
    env = {name: value for name, value in env.items() if value is not None}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_logged(command: list[str], root: Path, what: str, env_extra: dict[str, str | None] | None = None) -> str:
    """Run a command in the workspace, streaming its output to the Prefect log; returns it.
    `env_extra`: variables to set (or, with None, to remove) for the command."""
    logger = get_run_logger()
    env = subprocess_env(env_extra)
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    lines = []
    for line in process.stdout:
        line = line.rstrip().rsplit("\r", 1)[-1]  # tqdm redraws with \r: keep the final state
        if "%|" in line and "100%|" not in line:
            continue  # a progress bar's intermediate state: only its final line goes to the log
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
def refresh_pool(root: Path, params_file: str, refresh: bool) -> dict:
    """Build the pool if missing (or re-ingest when asked), record it in data.dvc; report changes."""
    from pipeline.config import load_params
    from pipeline.workspace import pool_change, pool_snapshot

    pool = root / load_params(root / params_file).paths.pool
    before = pool_snapshot(pool)
    if refresh or not (pool / layout.MANIFEST).is_file():
        run_logged([sys.executable, "-m", "pipeline", "ingest", "--params", params_file], root, "ingest")
    run_logged(_dvc("add", "--quiet", str(pool.relative_to(root))), root, "dvc add")
    return pool_change(before, pool_snapshot(pool))


def stage_command(stage: str, force: bool = False) -> list[str]:
    """The DVC command for one stage. Forced: `dvc repro --force --single-item <stage>`, which runs
    the stage whatever changed (and without restoring it from DVC's run cache) but not its upstream
    stages: the flow already runs them, in order, as their own tasks."""
    return _dvc("repro", "--force", "--single-item", stage) if force else _dvc("repro", stage)


# Stages that leave a resume checkpoint in their output folder (params.paths attribute).
CHECKPOINT_FOLDERS = {"prior": "prior", "train": "model"}


def stage_checkpoint(root: Path, stage: str) -> Path | None:
    """`<stage's output folder>/checkpoint.pt` for the stages that resume, else None."""
    from pipeline.config import load_params

    folder = CHECKPOINT_FOLDERS.get(stage)
    return None if folder is None else Path(root) / getattr(load_params(Path(root) / layout.PARAMS).paths, folder) / layout.CHECKPOINT


def drop_checkpoint(root: Path, stage: str, why: str) -> bool:
    """Delete the stage's resume checkpoint (True if there was one), saying why."""
    from pipeline.training.checkpoint import discard

    path = stage_checkpoint(root, stage)
    if path is None or not path.is_file():
        return False
    discard(path, why)
    return True


def lock_entry(root: Path, stage: str) -> dict | None:
    """The stage's entry in the workspace's dvc.lock (cmd, deps, params, outs with their md5s), or
    None before its first run."""
    lock = Path(root) / layout.DVC_LOCK
    if not lock.is_file():
        return None
    return ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).get(stage)


@task(name="stage")
def run_stage(root: Path, stage: str, force: bool = False) -> bool:
    """`dvc repro <stage>`: runs the stage only if its deps, params or code changed (always when
    `force`); True if it ran.

    "Ran" is read from dvc.lock, not from DVC's log: the stage's entry changed, so its outputs are
    new to this workspace (DVC computed them, or restored them from its run cache: both record new
    deps and outs), or the stage was forced. An unchanged entry means DVC skipped it (or recomputed
    identical outputs after they were deleted: nothing new to report).

    A forced stage starts from step 0 (its checkpoint is dropped first). After any unforced repro
    the outputs are current, so a checkpoint still beside them belongs to an abandoned run (a
    stage that computed deleted its own when it finished) and is dropped: a later `--force` must
    not resume from it. That is the case whether DVC skipped the stage or restored it from its run
    cache, so the drop does not depend on "ran"."""
    if force:
        drop_checkpoint(root, stage, "--force: the stage starts over")
    before = lock_entry(root, stage)
    run_logged(stage_command(stage, force), root, stage)
    ran = force or lock_entry(root, stage) != before
    if not force:
        drop_checkpoint(root, stage, "DVC skipped or restored the stage: its outputs are current")
    return ran


def transient_failure(task, task_run, state) -> bool:
    """Retry the register task only for what a retry can fix (a locked database, a crash): a
    gate rule naming a missing metric or a refused params file fails the same way every time."""
    from pipeline.config import ParamsError
    from pipeline.tracking import RegistryError
    from pipeline.registry.promotion import GateError

    error = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not isinstance(error, (GateError, ParamsError, RegistryError))


class ParamsRefused(ValueError):
    """A retrain was asked to use params other than the workspace's params.yaml."""


def check_params_file(root: Path, params_file: str) -> None:
    """The flow runs DVC stages, which read the workspace's params.yaml: any other file would
    train with params.yaml and register the version under the other file's name and gate."""
    if (Path(root) / params_file).resolve() != (Path(root) / layout.PARAMS).resolve():
        raise ParamsRefused(f"--params {params_file}: the DVC stages read {Path(root) / layout.PARAMS}, so a retrain "
                            f"must use it; install the other file with `raincheck profile NAME` (or copy it to params.yaml), then run again")


@task(name="register", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=transient_failure)
def register(root: Path, params_file: str, flow_run_id: str | None) -> dict:
    """Register, gate and alias (pipeline.registry.register): resumable, so a retry finishes a
    half-registered version instead of leaving it."""
    from pipeline.config import load_params
    from pipeline.registry.register import run_register

    return run_register(load_params(root / params_file), root, flow_run_id=flow_run_id)


@task(name="push", retries=3, retry_delay_seconds=[5, 20, 60])
def push(root: Path) -> str:
    """Push the pool and every stage output to the DVC remote."""
    return run_logged(_dvc("push", "--quiet"), root, "dvc push")


@task(name="commit-results")
def commit_results_to_branch(root: Path, branch: str) -> str:
    from pipeline.workspace import commit_to_branch

    return commit_to_branch(root, branch, message="raincheck: scheduled retrain results")


def _notify_failure(flow, flow_run, state) -> None:
    from pipeline.workspace import notify

    notify("failure", {"flow_run": flow_run.name, "message": str(state.message)[:2000]})


@flow(name="retrain", log_prints=True, on_failure=[_notify_failure])
def retrain(root: str = ".", params_file: str = layout.PARAMS, refresh_pool_first: bool = False, commit_results: bool = False,
            force: bool = False) -> dict:
    """The whole pipeline in one workspace; returns the metrics, the registration and what ran.

    `force` re-runs every stage even when DVC would skip it (e.g. to time a full run).
    """
    from prefect.runtime import flow_run

    from pipeline.config import load_params
    from pipeline.io import read_json
    from pipeline.reporting import run_markdown
    from pipeline.workspace import notify, workspace_lock

    workspace = Path(root).resolve()
    check_params_file(workspace, params_file)
    params = load_params(workspace / params_file)
    with workspace_lock(workspace):
        data_change = refresh_pool(workspace, params_file, refresh_pool_first)
        ran = [stage for stage in STAGES if run_stage.with_options(name=stage)(workspace, stage, force)]
        metrics = read_json(workspace / params.paths.evaluation / layout.METRICS)
        registration = register(workspace, params_file, str(flow_run.id) if flow_run.id else None)
        push(workspace)
        committed = commit_results_to_branch(workspace, params.schedule.results_branch) if commit_results else None
    result = {"metrics": metrics, "registration": registration, "stages_run": ran, "data_change": data_change, "committed": committed}
    create_markdown_artifact(key="retrain-summary", markdown=run_markdown(result, params, workspace), description="raincheck retrain: data, metrics vs champion, gate")
    curation = workspace / params.paths.curated / layout.SUMMARY
    if curation.is_file():
        create_table_artifact(key="curation", table=[{"measure": k, "value": v} for k, v in sorted(read_json(curation).items())],
                              description="curated data: counts per split, duplicates, complexity quantiles")
    if registration.get("status") in {"created", "resumed"} and registration.get("promote"):
        notify("promotion", {"model": registration["model_name"], "version": registration["version"], "reasons": registration["reasons"]})
    return result


def main(root: Path, params_file: str = layout.PARAMS, refresh: bool = False, force: bool = False) -> int:
    """Run the flow in `root` and print the summary (the environment is set by flows.__main__)."""
    from pipeline.workspace import WorkspaceError, prepare_workspace, print_summary, workspace_lock

    try:
        check_params_file(root, params_file)
    except ParamsRefused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    prepare_workspace(root)
    with contextlib.ExitStack() as held:
        try:
            # Taken here too, before Prefect starts a server, so a second run is refused in a
            # second; the flow's own workspace_lock is then re-entrant (pipeline.workspace.LOCK_ENV).
            held.enter_context(workspace_lock(root))
        except WorkspaceError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        from prefect import tags

        from pipeline.config import load_params

        params = load_params(root / params_file)
        # Flow-run tags: filter runs by profile and model architecture in the Prefect UI.
        with tags(f"profile:{params.profile}", f"model:{params.train.model.type}", "raincheck"):
            result = retrain(str(root), params_file, refresh, force=force)
    print_summary(root, params_file, result)
    return 0
