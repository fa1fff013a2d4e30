"""The environment the flows give their stage subprocesses (flows.retrain.subprocess_env) and a
study cell's changes to it (flows.study.cell_env).

Why it matters: a Dask nanny exports MALLOC_TRIM_THRESHOLD_=65536 to its workers; a cell's
training inherited it and ran 1.55x slower (README, "The generalization study", Scale-out).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.retrain import subprocess_env
from flows.study import cell_env


def test_none_removes_a_variable_and_strings_set_one(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("RAINCHECK_KEPT", "yes")
    env = subprocess_env({"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"})
    assert "MALLOC_TRIM_THRESHOLD_" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["RAINCHECK_KEPT"] == "yes"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_a_cell_runs_one_thread_per_pool_and_without_the_dask_trim_threshold(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a Dask worker process has
    env = subprocess_env(cell_env(1))
    assert {env[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")} == {"1"}
    seen = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('MALLOC_TRIM_THRESHOLD_', 'unset'))"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert seen == "unset"
    assert subprocess_env(cell_env(2))["OMP_NUM_THREADS"] == "2"
