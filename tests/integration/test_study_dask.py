"""The study on a real local Dask cluster: `study.task_runner: dask`, `study.workers: 2`.

A tiny grid (2 cells, tiny profile, 10 iterations each) runs through `python -m flows study`; each
cell records the Dask worker that ran it, its learning curve and its per-image scores.
"""

from __future__ import annotations

import csv
import re
import sys

import pytest
import yaml

from tests.workspaces import pooled_workspace, run, tiny_dask_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def dask_run(tmp_path_factory):
    workspace, env, params = pooled_workspace(tmp_path_factory.mktemp("dask"))
    (workspace / "study.yaml").write_text(yaml.safe_dump(tiny_dask_study(params, 2, [1, 2], 10), sort_keys=False))
    result = run([sys.executable, "-m", "flows", "study", "--root", str(workspace), "--params", "study.yaml"],
                 workspace, env, timeout=900)
    return workspace, result.stdout + result.stderr


def test_cells_run_on_two_dask_workers(dask_run):
    workspace, out = dask_run
    assert "study: 2 cells" in out
    rows = list(csv.DictReader((workspace / "build" / "study" / "cells.csv").open()))
    assert len(rows) == 2 and not any(r["error"] for r in rows)
    workers = {r["worker"] for r in rows}
    assert len(workers) == 2 and all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
    # Both cells open live MLflow runs at once on a store the flow created first (no migration race).
    assert "live MLflow logging off" not in out
    # The stages the cells share (curation, suites, prior) run for one cell at a time, under the
    # study's lock: never two cells writing the same objects into the shared DVC cache at once.
    shared = re.findall(r"cell (\w+) \| (?:Running stage|Stage) '(?:curate|synthesize|prior)'(?::| is cached)", out)
    assert len(shared) == 6, shared  # 3 stages, run or restored, in each of the 2 cells
    runs = [cell for i, cell in enumerate(shared) if i == 0 or shared[i - 1] != cell]
    assert len(runs) == 2, f"the cells' shared stages interleaved: {shared}"
    assert out.count("Running stage 'curate'") == 1  # the second cell restored it from DVC's run cache


def test_curves_convergence_and_verdicts_are_reported(dask_run):
    workspace, out = dask_run
    study = workspace / "build" / "study"
    curves = list(csv.DictReader((study / "curves.csv").open()))
    assert {r["cell_id"] for r in curves} and len(curves) == 2 * 5 and all(float(r["psnr/val"]) > 0 for r in curves)
    assert "study: 2 of 2 cells converged" in out
    claims = list(csv.DictReader((study / "claims.csv").open()))
    assert len(claims) == 4 and {c["verdict"] for c in claims} == {"not resolved"}  # the grid varies no factor
    assert "**Recommended**" in (study / "recommendation.md").read_text()
