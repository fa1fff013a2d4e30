"""The study flow for real: a tiny grid through Prefect's task runner, each cell the same DVC
stages in its own git worktree; a failing cell is reported and the others finish; a re-run reuses
finished cells."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import yaml


pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def study_run(retrained_copy):
    # The pool must exist and be tracked before the cells can share it: reuse (a copy of) the
    # retrained workspace, so the shared one stays as the other modules' copies expect it.
    workspace, env, params = retrained_copy["workspace"], retrained_copy["env"], dict(retrained_copy["params"])
    params["study"] = {
        "grid": {"curate.selection.n_backgrounds": [16, 24, 100000]},  # 100000: more than the pool has
        "seeds": [1],
        "fixed": {"train.iterations": 10, "train.val_every": 2},
        "workers": 2,
        "floor": 0.0,
        "ood_suites": ["unseen", "screen"],
        "convergence_tolerance_db": 20.0,  # 10 iterations: only the failed cell counts as not converged
        "bootstrap": 200,
        "heatmap": {"x": "curate.selection.n_backgrounds", "y": "train.rain.presets", "facets": ["train.model"]},
    }
    (workspace / "study.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = subprocess_run(workspace, env)
    second = subprocess_run(workspace, env)
    return {"workspace": workspace, "first": first, "second": second}


def subprocess_run(workspace, env):
    import subprocess

    return subprocess.run([sys.executable, "-m", "flows", "study", "--root", str(workspace), "--params", "study.yaml"],
                          cwd=workspace, env=env, capture_output=True, text=True, timeout=900)


def test_failing_cell_is_reported_and_the_others_finish(study_run):
    first = study_run["first"]
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-3000:]
    assert "study: 3 cells" in out
    assert out.count("FAILED:") == 1 and "n_backgrounds" in out
    rows = list(csv.DictReader((study_run["workspace"] / "build" / "study" / "cells.csv").open()))
    assert len(rows) == 3
    assert sum(bool(r["error"]) for r in rows) == 1
    assert all(float(r["psnr_rain/unseen"]) > 0 for r in rows if not r["error"])


def test_table_plots_and_recommendation_are_written(study_run):
    out_dir = study_run["workspace"] / "build" / "study"
    table = list(csv.DictReader((out_dir / "table.csv").open()))
    assert len(table) == 3 and {r["seeds"] for r in table} == {"1", "0"}
    for name in ("heatmaps.png", "tradeoff.png"):
        assert (out_dir / name).stat().st_size > 5_000
    recommendation = (out_dir / "recommendation.md").read_text()
    # the failed cell never converged: the study says so at the top and recommends nothing
    assert recommendation.splitlines()[2].startswith("**NOT CONVERGED: 1 of 3 cells")
    assert "**2 of 3 converged**" in recommendation and "Recommended" not in recommendation
    assert yaml.safe_load((out_dir / "suggested_params.yaml").read_text()) == {}
    record = json.loads((out_dir / "recommendation.json").read_text())  # what `raincheck study apply` reads
    assert record["config"] is None and record["reason"] == "1 of 3 cells did not converge (or failed)"
    effects = list(csv.DictReader((out_dir / "effects.csv").open()))
    assert [r["factor"] for r in effects] == ["N", "N"]  # 16 vs 24 (the 100000 cell failed): rain and background


def test_rerun_reuses_finished_cells(study_run):
    second = study_run["second"]
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert out.count("reusing finished result") == 2
