"""The generalization study flow: fan grid cells out over a Prefect task runner.

Each cell is a git worktree of the workspace's HEAD with its own params.yaml, sharing the main
DVC cache, and runs `dvc repro evaluate`: the same stages and code as the retraining flow. DVC's
run cache restores any stage whose code, deps and params a previous cell already computed (the
curation, the suites and the prior are computed once, not once per cell). A finished cell's
metrics are kept under `.raincheck/study/results/<key>.json`, keyed by its params, the data
digest and the code commit, so a re-run reuses it. A failing cell is reported; the others go on.
A cell's result carries its learning curve (train log.csv) and per-image scores (per_image.csv):
convergence and the bootstrap intervals are computed from them at report time.

Task runners (params `study.task_runner`): `thread` (a thread pool of `study.workers`), or `dask`:
a local Dask cluster of `study.workers` single-threaded worker processes, or the existing cluster
at `study.dask_address`. Each cell's subprocesses get OMP/MKL/NUMBA thread counts equal to its
`train.threads`, so N workers use N x train.threads cores.

Run it: `make study` (or `python -m flows study [--root DIR]`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

from flows.retrain import refresh_pool, run_logged
from pipeline import layout
from pipeline.runtime import state_path
from pipeline.stages import DVC_STAGES


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _prepare_cell(root: Path, cell_dir: Path, params: dict) -> None:
    """A detached worktree at HEAD sharing the main DVC cache, with the pool and the cell's params."""
    from filelock import FileLock

    lock = state_path(root, "study", "git.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock)):  # `git worktree add/prune` of parallel cells must not interleave
        _new_worktree(root, cell_dir)
    dvc = [sys.executable, "-m", "dvc"]
    for args in (["cache", "dir", "--local", str(root / ".dvc" / "cache")],
                 ["config", "--local", "cache.type", "hardlink,copy"],
                 ["config", "--local", "core.autostage", "false"]):
        subprocess.run(dvc + args, cwd=cell_dir, capture_output=True, text=True, check=True)
    shutil.copy2(root / layout.POOL_DVC, cell_dir / layout.POOL_DVC)
    (cell_dir / layout.PARAMS).write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(dvc + ["checkout", "--quiet", layout.POOL_DVC], cwd=cell_dir, capture_output=True, text=True, check=True)


def _new_worktree(root: Path, cell_dir: Path) -> None:
    if cell_dir.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(cell_dir)], cwd=root, capture_output=True)
        shutil.rmtree(cell_dir, ignore_errors=True)
    _git(root, "worktree", "prune")
    _git(root, "worktree", "add", "--detach", "--force", str(cell_dir), "HEAD")


def _read_csv(path: Path, columns: tuple[str, ...] | None = None) -> list[dict]:
    """CSV rows; numbers as floats, empty cells as None; only `columns` when given."""
    import csv

    def value(text: str):
        try:
            return float(text) if text != "" else None
        except ValueError:
            return text

    with path.open(newline="") as handle:
        return [{k: value(v) for k, v in row.items() if columns is None or k in columns} for row in csv.DictReader(handle)]


def _dask_worker() -> str | None:
    """The Dask worker's address when the cell runs on one (the record that the cluster did the work)."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return None


def cell_env(threads: int) -> dict[str, str | None]:
    """Environment changes for a cell's processes (None: removed).

    - Thread-pool sizes: torch's default, BLAS, numba (why: N workers on N cores oversubscribe,
      and slow each other down, when every process starts one thread per core).
    - No MALLOC_TRIM_THRESHOLD_: a Dask nanny sets it to 64 KiB in its workers' environment (Dask's
      `distributed.nanny.pre-spawn-environ`), the cells' subprocesses inherit it, and glibc then
      returns every freed activation buffer to the OS and faults it back in on the next step:
      training ran 1.55x slower (masked_prior cell, 600 steps: 51.8 s against 33.4 s without it).
    """
    env: dict[str, str | None] = {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    env["MALLOC_TRIM_THRESHOLD_"] = None
    return env


# The stages that cells of one curation share: every DVC stage before `train` (the curated data, the
# suites, the prior). One cell at a time runs them; a cell that comes second restores them from DVC's
# run cache. Two cells of a fresh clone used to compute the same outputs and commit them to the
# shared DVC cache at the same moment, and one of them then read a broken suite image in `evaluate`.
SHARED_STAGES = DVC_STAGES[: DVC_STAGES.index("train")]


@task(name="cell")
def run_cell(root: Path, cell_id: str, label: str, params: dict, results_dir: Path, key: str) -> dict:
    """Run one cell's stages through `evaluate`; returns its metrics (cached by `key`)."""
    from filelock import FileLock

    from pipeline.io import read_json, write_json

    logger = get_run_logger()
    cached = results_dir / f"{key}.json"
    if cached.is_file():
        logger.info("cell %s (%s): reusing finished result", cell_id, label)
        return read_json(cached)
    started = time.time()
    cell_dir = state_path(root, "study", "cells", cell_id)
    _prepare_cell(root, cell_dir, params)
    env = cell_env(params["train"]["threads"])
    with FileLock(str(state_path(root, "study", "shared-stages.lock"))):
        run_logged([sys.executable, "-m", "dvc", "repro", *SHARED_STAGES], cell_dir, f"cell {cell_id}", env)
    run_logged([sys.executable, "-m", "dvc", "repro", "evaluate"], cell_dir, f"cell {cell_id}", env)
    evaluation, model = cell_dir / params["paths"]["evaluation"], cell_dir / params["paths"]["model"]
    result = {"cell_id": cell_id, "label": label, "worker": _dask_worker(), "metrics": read_json(evaluation / layout.METRICS),
              "train": read_json(model / layout.METRICS), "curve": _read_csv(model / layout.LOG),
              "per_image": _read_csv(evaluation / layout.PER_IMAGE, ("suite", "image_id", "psnr_rain_gain", "psnr_bg_gain")),
              "started": started, "finished": time.time()}  # epoch seconds: benchmarks/bench_study.py reads them
    write_json(cached, result)
    subprocess.run(["git", "worktree", "remove", "--force", str(cell_dir)], cwd=root, capture_output=True)
    return result


@flow(name="study", log_prints=True)
def study(root: str = ".", params_file: str = layout.PARAMS) -> dict:
    """Expand the grid in params.study, run every cell, aggregate, plot, recommend, log."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from pipeline.config import ParamsError, digest, load_params, read_params
    from pipeline.lineage import data_digest, git_commit
    from pipeline.study import cell_params, check_study, expand_grid
    from pipeline.study_report import write_study_outputs

    workspace = Path(root).resolve()
    params = load_params(workspace / params_file)
    if params.study is None:
        raise ParamsError(f"{workspace / params_file}: no `study:` section (see profiles/study-quick.yaml)")
    base = read_params(workspace / params_file)  # an overlay (`extends:`) comes merged onto its base
    cells = expand_grid(params.study.grid, params.study.seeds)
    # The cells check the pool out of the DVC cache: a fresh clone has none yet, so build it first
    # (ingest when data/ is missing, then `dvc add`), exactly as the retraining flow does.
    refresh_pool(workspace, params_file, refresh=False)
    _open_tracking_store()
    commit, _ = git_commit(workspace)
    data = data_digest(params, workspace)
    results_dir = state_path(workspace, "study", "results")
    print(f"study: {len(cells)} cells ({len(cells) // len(params.study.seeds)} configurations x {len(params.study.seeds)} seeds)")

    study_params = params.study
    futures = []
    for cell in cells:
        validated = cell_params(base, {**study_params.fixed, **cell.as_dict})
        check_study(study_params, validated)
        cell_raw = validated.model_dump(mode="json", exclude_none=True)
        key = digest({"cell": cell_raw, "data": data, "code": commit})
        futures.append((cell, run_cell.with_options(name=f"cell-{cell.cell_id}").submit(workspace, cell.cell_id, cell.label, cell_raw, results_dir, key)))
    results = [_cell_result(cell, future, study_params) for cell, future in futures]
    summary = write_study_outputs(params, workspace, results, lineage={"git_commit": commit, "data_digest": data})
    print(f"study: {summary['converged']} of {len(results)} cells converged")
    for claim in summary["claims"]:
        print(f"claim: {claim['claim']}: {claim['verdict']} (effect {claim['effect']:+.2f} dB, 95% CI [{claim['low']:+.2f}, {claim['high']:+.2f}])")
    create_table_artifact(key="study-cells", table=summary["table_rows"], description="every configuration, mean ± std over seeds")
    create_markdown_artifact(key="study-recommendation", markdown=summary["markdown"], description="the study's recommendation")
    return summary


def _open_tracking_store() -> None:
    """Create the MLflow store (SQLite schema, the `raincheck` experiment) before the cells start.

    Why: every cell's prior and train stages open a live MLflow run on the same store; in a fresh
    workspace the first two cells then ran the schema migrations at once, and the loser trained
    without live logging ("duplicate column name: step")."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        from pipeline.tracking import ensure_experiment, mlflow_client

        ensure_experiment(mlflow_client())


def _cell_result(cell, future, study_params) -> dict:
    """Wait for one cell's task: its metrics, curve and convergence, or its error (a failed cell is
    reported and counts as not converged; the others go on)."""
    from pipeline.study import convergence

    state = future.wait() or future.state
    record = {"cell_id": cell.cell_id, "label": cell.label, "overrides": cell.as_dict, "config": cell.config}
    if state.is_completed():
        outcome = future.result()
        curve = outcome.get("curve") or []
        return {**record, "worker": outcome.get("worker"), "metrics": outcome["metrics"], "error": None, "curve": curve,
                "per_image": outcome.get("per_image"),
                "convergence": convergence(curve, study_params.convergence_metric, study_params.convergence_tolerance_db)}
    message = str(state.message or "failed")
    print(f"cell {cell.cell_id} ({cell.label}) FAILED: {message[:500]}")
    return {**record, "metrics": None, "error": message[:2000], "curve": [], "per_image": None,
            "convergence": {"converged": False, "delta_db": None, "reason": "failed"}}


def task_runner(study):
    """The Prefect task runner params `study` asks for (see the module docstring)."""
    if study is not None and study.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if study.dask_address:
            return DaskTaskRunner(address=study.dask_address)
        # One thread per worker process: a cell is a subprocess whose own threads come from train.threads.
        return DaskTaskRunner(cluster_kwargs={"n_workers": study.workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=study.workers if study else 1)


def main(root: Path, params_file: str) -> int:
    from pipeline.config import load_params

    params = load_params(root / params_file)
    study_params = params.study
    if study_params is not None:
        threads = study_params.fixed.get("train.threads", params.train.threads)
        cores = os.cpu_count() or 1
        if study_params.dask_address is None and study_params.workers * threads > cores:
            print(f"note: study.workers={study_params.workers} x train.threads={threads} > {cores} cores: "
                  f"cells will slow each other down (set train.threads in study.fixed)")
    summary = study.with_options(task_runner=task_runner(study_params))(str(root), params_file)
    print(summary["markdown"])
    return 0 if summary["completed"] else 1
