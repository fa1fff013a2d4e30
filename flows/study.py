"""The generalization study flow: fan grid cells out over a Prefect task runner.

Each cell is a git worktree of the workspace's HEAD with its own params.yaml, sharing the main
DVC cache, and runs `dvc repro evaluate`: the same stages and code as the retraining flow. DVC's
run cache restores any stage whose code, deps and params a previous cell already computed (the
curation, the suites and the prior are computed once, not once per cell). A finished cell's
metrics are kept under `.raincheck/study/results/<key>.json`, keyed by its params, the data
digest and the code commit, so a re-run reuses it. A failing cell is reported; the others go on.

Run it: `make study` (or `python -m flows study [--root DIR]`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task

from flows.retrain import run_logged


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _prepare_cell(root: Path, cell_dir: Path, params: dict) -> None:
    """A detached worktree at HEAD sharing the main DVC cache, with the pool and the cell's params."""
    if cell_dir.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(cell_dir)], cwd=root, capture_output=True)
        shutil.rmtree(cell_dir, ignore_errors=True)
    _git(root, "worktree", "prune")
    _git(root, "worktree", "add", "--detach", "--force", str(cell_dir), "HEAD")
    dvc = [sys.executable, "-m", "dvc"]
    for args in (["cache", "dir", "--local", str(root / ".dvc" / "cache")],
                 ["config", "--local", "cache.type", "hardlink,copy"],
                 ["config", "--local", "core.autostage", "false"]):
        subprocess.run(dvc + args, cwd=cell_dir, capture_output=True, text=True, check=True)
    shutil.copy2(root / "data.dvc", cell_dir / "data.dvc")
    (cell_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(dvc + ["checkout", "--quiet", "data.dvc"], cwd=cell_dir, capture_output=True, text=True, check=True)


@task(name="cell")
def run_cell(root: Path, cell_id: str, label: str, params: dict, results_dir: Path, key: str) -> dict:
    """Run one cell's stages through `evaluate`; returns its metrics (cached by `key`)."""
    from pipeline.io import read_json, write_json

    logger = get_run_logger()
    cached = results_dir / f"{key}.json"
    if cached.is_file():
        logger.info("cell %s (%s): reusing finished result", cell_id, label)
        return read_json(cached)
    cell_dir = root / ".raincheck" / "study" / "cells" / cell_id
    _prepare_cell(root, cell_dir, params)
    run_logged([sys.executable, "-m", "dvc", "repro", "evaluate"], cell_dir, f"cell {cell_id}")
    evaluation = params["paths"]["evaluation"]
    result = {"cell_id": cell_id, "label": label, "metrics": read_json(cell_dir / evaluation / "metrics.json"),
              "train": read_json(cell_dir / params["paths"]["model"] / "metrics.json")}
    write_json(cached, result)
    subprocess.run(["git", "worktree", "remove", "--force", str(cell_dir)], cwd=root, capture_output=True)
    return result


@flow(name="study", log_prints=True)
def study(root: str = ".", params_file: str = "params.yaml") -> dict:
    """Expand the grid in params.study, run every cell, aggregate, plot, recommend, log."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    from pipeline.config import ParamsError, digest, load_params
    from pipeline.registry.lineage import data_digest, git_commit
    from pipeline.study import cell_params, expand_grid
    from pipeline.study_report import write_study_outputs

    workspace = Path(root).resolve()
    params = load_params(workspace / params_file)
    if params.study is None:
        raise ParamsError(f"{workspace / params_file}: no `study:` section (see profiles/study-quick.yaml)")
    base = yaml.safe_load((workspace / params_file).read_text())
    cells = expand_grid(params.study.grid, params.study.seeds)
    commit, _ = git_commit(workspace)
    data = data_digest(params, workspace)
    results_dir = workspace / ".raincheck" / "study" / "results"
    print(f"study: {len(cells)} cells ({len(cells) // len(params.study.seeds)} configurations x {len(params.study.seeds)} seeds)")

    futures = []
    for cell in cells:
        cell_raw = cell_params(base, {**params.study.fixed, **cell.as_dict}).model_dump(mode="json", exclude_none=True)
        key = digest({"cell": cell_raw, "data": data, "code": commit})
        futures.append((cell, run_cell.with_options(name=f"cell-{cell.cell_id}").submit(workspace, cell.cell_id, cell.label, cell_raw, results_dir, key)))
    results = []
    for cell, future in futures:
        state = future.wait() or future.state
        if state.is_completed():
            outcome = future.result()
            results.append({"cell_id": cell.cell_id, "label": cell.label, "overrides": cell.as_dict, "config": cell.config,
                            "metrics": outcome["metrics"], "error": None})
        else:
            message = str(state.message or "failed")
            print(f"cell {cell.cell_id} ({cell.label}) FAILED: {message[:500]}")
            results.append({"cell_id": cell.cell_id, "label": cell.label, "overrides": cell.as_dict, "config": cell.config,
                            "metrics": None, "error": message[:2000]})

    summary = write_study_outputs(params, workspace, results, lineage={"git_commit": commit, "data_digest": data})
    create_table_artifact(key="study-cells", table=summary["table_rows"], description="every configuration, mean ± std over seeds")
    create_markdown_artifact(key="study-recommendation", markdown=summary["markdown"], description="the study's recommendation")
    return summary


def main(root: Path, params_file: str) -> int:
    from pipeline.config import load_params

    params = load_params(root / params_file)
    runner = None
    if params.study is not None and params.study.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional: pip install prefect-dask

        runner = DaskTaskRunner(cluster_kwargs={"n_workers": params.study.workers, "threads_per_worker": 1})
    else:
        from prefect.task_runners import ThreadPoolTaskRunner

        runner = ThreadPoolTaskRunner(max_workers=params.study.workers if params.study else 1)
    summary = study.with_options(task_runner=runner)(str(root), params_file)
    print(summary["markdown"])
    return 0 if summary["completed"] else 1
