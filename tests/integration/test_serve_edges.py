"""`make serve` / `make stop` edges (issue 14): a bad schedule is refused before anything starts,
a runner that dies on start is reported (exit 1, its error), and a second `make serve` never
leaves a second runner behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.server import ServeError, confirm_alive
from tests.conftest import REPO
from tests.workspaces import child_env, make_workspace


def _flows(workspace: Path, env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows", *args, "--root", str(workspace)], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")  # a zombie (reaped later by init) is not alive
    return not (status.is_file() and "\nState:\tZ" in status.read_text())


@pytest.mark.parametrize(
    "key, value",
    [("cron", "61 25 * * 9"), ("timezone", "Mars/Olympus_Mons")],
)
def test_bad_schedule_is_refused_before_any_server_starts(tmp_path: Path, key: str, value: str):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["schedule"][key] = value
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = child_env(REPO)
    result = _flows(workspace, env, "serve", "--port", str(_free_port()), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"schedule.{key}" in result.stderr and value in result.stderr
    assert "serving deployment" not in result.stdout
    assert not (workspace / ".raincheck" / "serve.pid").exists()
    assert not (workspace / ".raincheck" / "prefect-server.pid").exists()


def test_a_runner_that_dies_on_start_is_reported_with_its_error(tmp_path: Path):
    log = tmp_path / "serve.log"
    log.write_text("output of an earlier, healthy start\n")
    offset = log.stat().st_size
    with log.open("ab") as handle:
        # A real process that fails the way a runner with a bad cron did; it is our child, so
        # once dead it is a zombie that os.kill(pid, 0) still finds.
        runner = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('ValueError: Invalid cron string')"],
                                  stdout=handle, stderr=subprocess.STDOUT)
    with pytest.raises(ServeError) as error:
        confirm_alive(runner, log, offset, settle=30)
    message = str(error.value)
    assert f"the runner (pid {runner.pid}) exited with code 1 right after starting" in message
    assert "Invalid cron string" in message and "earlier, healthy start" not in message


def test_a_live_runner_passes_the_check(tmp_path: Path):
    log = tmp_path / "serve.log"
    with log.open("ab") as handle:
        runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], stdout=handle)
    try:
        started = time.monotonic()
        confirm_alive(runner, log, settle=1.0)
        assert time.monotonic() - started >= 1.0 and runner.poll() is None
    finally:
        runner.kill()
        runner.wait()


@pytest.mark.integration
@pytest.mark.slow
def test_serve_twice_then_stop_leaves_nothing_running(tmp_path: Path):
    workspace, env, _ = make_workspace(tmp_path)
    port = _free_port()
    first = _flows(workspace, env, "serve", "--port", str(port))
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        runner = int((workspace / ".raincheck" / "serve.pid").read_text())
        server = int((workspace / ".raincheck" / "prefect-server.pid").read_text())
        assert _alive(runner) and _alive(server)

        second = _flows(workspace, env, "serve", "--port", str(port))
        assert second.returncode == 1
        assert f"error: a runner already serves this workspace (pid {runner}" in second.stderr
        assert int((workspace / ".raincheck" / "serve.pid").read_text()) == runner
    finally:
        stopped = _flows(workspace, env, "stop")
    assert stopped.returncode == 0 and f"serve (pid {runner})" in stopped.stdout
    deadline = time.monotonic() + 30
    while (_alive(runner) or _alive(server)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(runner) and not _alive(server)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


@pytest.mark.integration
@pytest.mark.slow
def test_a_run_left_running_by_a_killed_runner_is_marked_crashed_on_the_next_serve(tmp_path: Path):
    """kill -9 the runner while its deployment has a RUNNING flow run: the next `make serve` marks
    that run CRASHED (so it no longer holds the deployment's concurrency slot) and says so."""
    import signal

    from flows.deployments import RETRAIN_DEPLOYMENT

    workspace, env, _ = make_workspace(tmp_path)
    port = _free_port()
    deployment = f"retrain/{RETRAIN_DEPLOYMENT}"
    first = _flows(workspace, env, "serve", "--port", str(port))
    try:
        assert first.returncode == 0, first.stdout + first.stderr
        runner = int((workspace / ".raincheck" / "serve.pid").read_text())
        api = f"http://127.0.0.1:{port}/api"
        script = (
            "import sys\nfrom prefect.client.orchestration import get_client\nfrom prefect.states import Running\n"
            "with get_client(sync_client=True) as c:\n"
            f"    d = c.read_deployment_by_name({deployment!r})\n"
            "    run = c.create_flow_run_from_deployment(d.id, state=Running())\n"
            "    print(run.id)\n"
        )
        os.killpg(runner, signal.SIGKILL)  # the runner dies mid-run, as with kill -9
        made = subprocess.run([sys.executable, "-c", script], cwd=workspace, env={**env, "PREFECT_API_URL": api},
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr
        run_id = made.stdout.strip().splitlines()[-1]
        second = _flows(workspace, env, "serve", "--port", str(port))
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"of {deployment} was left running by a runner that is gone: marked crashed" in second.stdout
        state = subprocess.run([sys.executable, "-c", "from prefect.client.orchestration import get_client\n"
                                f"with get_client(sync_client=True) as c: print(c.read_flow_run({run_id!r}).state.type.value)"],
                               cwd=workspace, env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True, timeout=120)
        assert state.stdout.strip().splitlines()[-1] == "CRASHED", state.stdout + state.stderr
    finally:
        _flows(workspace, env, "stop")
