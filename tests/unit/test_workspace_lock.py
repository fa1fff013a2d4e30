"""The workspace run lock itself (not the deployment's concurrency limit): while another process
holds `.raincheck/run.lock`, `raincheck train`, `raincheck register` and `python -m flows retrain`
are refused with one line and exit 1; the holder's own children run (the flow's DVC stages)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.workspace import LOCK_ENV, lock_path, workspace_lock

REPO = Path(__file__).resolve().parents[2]
HOLD = """import sys, time
from pipeline.workspace import workspace_lock
with workspace_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()  # until the test closes stdin
"""


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git repository with the project's dvc.yaml and params.yaml (enough for the refusals)."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, ws / name)
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    (ws / ".dvc").mkdir()  # prepare_workspace then skips `dvc init`
    return ws


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != LOCK_ENV}
    env["PYTHONPATH"] = str(REPO)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture
def held(workspace: Path):
    """Another process holding the workspace's run lock (as a running flow does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(workspace)], cwd=REPO, env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", [["-m", "pipeline", "train"], ["-m", "pipeline", "register", "--wait", "0"], ["-m", "flows", "retrain"]])
def test_a_second_run_is_refused_while_the_lock_is_held(workspace, held, command):
    done = _run([*command, "--root", str(workspace)], workspace)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr[-2000:]
    assert lines[-1] == f"error: another raincheck run holds {lock_path(workspace)} in this workspace (a flow or a step); wait for it to finish"
    assert "Traceback" not in done.stderr
    assert not (workspace / "build").exists()  # nothing ran


def test_the_holders_children_run_under_its_lock(workspace, held):
    """$RAINCHECK_RUN_LOCK names the held lock: a stage the holder started goes past it (here it
    then fails for want of data, which shows it ran)."""
    done = _run(["-m", "pipeline", "train", "--root", str(workspace)], workspace, {**_env(), LOCK_ENV: str(lock_path(workspace))})
    assert done.returncode != 0 and "another raincheck run holds" not in done.stderr


def test_lock_is_released_and_the_variable_restored(workspace):
    with workspace_lock(workspace):
        assert os.environ[LOCK_ENV] == str(lock_path(workspace))
        with workspace_lock(workspace / "."):  # re-entrant in the holder
            pass
        probe = _run(["-c", HOLD.replace('print("held", flush=True)', 'print("held", flush=True); sys.exit(0)'), str(workspace)],
                     REPO, {**_env()})
        assert probe.returncode == 1 and "another raincheck run holds" in probe.stderr
    assert LOCK_ENV not in os.environ
    free = _run(["-c", HOLD.replace("sys.stdin.readline()", "pass"), str(workspace)], REPO)
    assert free.returncode == 0 and free.stdout.strip() == "held"


def test_the_ingest_and_registry_locks_refuse_a_second_holder_by_name(tmp_path: Path):
    """The ingest and registry locks share the workspace lock's mechanism (pipeline.runtime.held_lock):
    while another process holds one, a second taker gets that lock's own error naming its file,
    and once released the lock can be taken again."""
    from pipeline.ingestion.ingest import IngestError, _ingest_lock
    from pipeline.runtime import state_path
    from pipeline.tracking import RegistryError, registry_lock

    hold = """import sys
from pipeline.runtime import held_lock
from pathlib import Path
with held_lock(Path(sys.argv[1]), 0, RuntimeError):
    print("held", flush=True)
    sys.stdin.readline()
"""
    for name, take, error in (("ingest.lock", lambda: _ingest_lock(tmp_path), IngestError),
                              ("registry.lock", lambda: registry_lock(tmp_path, timeout=0.2), RegistryError)):
        path = state_path(tmp_path, name)
        holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], cwd=REPO, env=_env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            with pytest.raises(error, match=re.escape(str(path))):
                with take():
                    pass
        finally:
            holder.stdin.close()
            holder.wait(timeout=30)
        with take():  # released with its holder
            assert path.exists()
