"""A real Prefect server on 127.0.0.1 and the process that serves raincheck's deployments.

State lives under `<root>/.raincheck/` (Prefect's SQLite database, logs, pid files), so a
workspace's run history stays with it. `make serve` / `make stop` call `start` / `stop`.
Point at another server instead by exporting PREFECT_API_URL before `make serve`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline import layout
from pipeline.runtime import state_path

DEFAULT_PORT = 4200
RUNNER_SETTLE_S = 5.0  # a runner that dies on start (bad schedule, import error) does so within this


class ServeError(RuntimeError):
    """`make serve` could not leave a working runner; the message says why and what to do."""


def state_dir(root: Path) -> Path:
    path = state_path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _spawn(command: list[str], root: Path, name: str, env: dict) -> subprocess.Popen:
    """Start a detached process (own session) logging to .raincheck/<name>.log; returns it."""
    state = state_dir(root)
    with (state / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file = state / f"{name}.pid"
    tmp = pid_file.with_name(f".{pid_file.name}.tmp")
    tmp.write_text(str(process.pid))
    os.replace(tmp, pid_file)  # atomic: `make stop` never reads half a pid
    return process


def running_runner(root: Path) -> int | None:
    """The pid of this workspace's live runner (`serve-foreground`, from serve.pid), else None."""
    pid_file = state_dir(root) / "serve.pid"
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    # A recycled pid belongs to another program: only a serve-foreground process counts.
    if cmdline.is_file() and b"serve-foreground" not in cmdline.read_bytes():
        return None
    return pid


def confirm_alive(process: subprocess.Popen, log: Path, offset: int = 0, settle: float = RUNNER_SETTLE_S) -> None:
    """Watch `process` for `settle` seconds; raise ServeError with its exit code and the end of
    its log (from byte `offset`: this start only) if it exits. Popen.poll() also reaps a dead
    child, so a zombie is not taken for a live runner (os.kill(pid, 0) would be)."""
    deadline = time.monotonic() + settle
    while True:
        code = process.poll()
        if code is not None:
            raise ServeError(f"the runner (pid {process.pid}) exited with code {code} right after starting:\n"
                             f"{_log_tail(log, offset)}\n(full log: {log})")
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)


def _log_tail(log: Path, offset: int, lines: int = 15) -> str:
    try:
        with log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"  {line}" for line in tail) or "  (the log is empty)"


def start_server(root: Path, port: int = DEFAULT_PORT, timeout: float = 120) -> str:
    """Start `prefect server start` on 127.0.0.1:port unless one answers there; returns the API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url):
        return api_url
    prefect = str(Path(sys.executable).parent / "prefect")
    env = {**os.environ, "PREFECT_API_URL": ""}
    _spawn([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], root, "prefect-server", env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(api_url):
            return api_url
        time.sleep(1)
    raise ServeError(f"Prefect server did not answer on {api_url} within {timeout:.0f} s; see {state_dir(root) / 'prefect-server.log'}")


def wait_for_deployment(root: Path, api_url: str, name: str, process: subprocess.Popen, offset: int = 0, timeout: float = 180) -> None:
    """Block until the served deployment is registered on the server; ServeError when the serving
    process dies first or it does not appear within `timeout` s."""
    url = f"{api_url.rstrip('/')}/deployments/name/{name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        confirm_alive(process, state_dir(root) / "serve.log", offset, settle=0)
        time.sleep(1)
    raise ServeError(f"deployment {name} did not appear on {api_url} within {timeout:.0f} s; see {state_dir(root) / 'serve.log'}")


def start_serving(root: Path, api_url: str, params_file: str = layout.PARAMS) -> subprocess.Popen:
    """Start `python -m flows serve-foreground` (the deployments' runner) detached; returns it."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    command = [sys.executable, "-m", "flows", "serve-foreground", "--root", str(root), "--params", params_file]
    return _spawn(command, root, "serve", env)


def serve_in_background(root: Path, params_file: str, port: int, deployment: str) -> tuple[str, int]:
    """`make serve`: one runner per workspace, confirmed alive; returns (API URL, runner pid).

    Refuses (ServeError) when a runner already serves this workspace, so `make stop` always
    stops everything; a runner that dies on start is reported with its log, and what this call
    started is stopped again.
    """
    pid = running_runner(root)
    if pid is not None:
        raise ServeError(f"a runner already serves this workspace (pid {pid}, {state_dir(root) / 'serve.pid'}); "
                         "run `make stop` first, then `make serve`")
    api_url = os.environ.get("PREFECT_API_URL") or start_server(root, port)
    from flows.orphans import crash_orphaned_runs

    for name in crash_orphaned_runs(root, api_url, deployment):  # no runner alive: they hold the slot forever
        print(f"[raincheck] flow run {name!r} of {deployment} was left running by a runner that is gone: marked crashed")
    log = state_dir(root) / "serve.log"
    offset = log.stat().st_size if log.is_file() else 0
    process = start_serving(root, api_url, params_file)
    try:
        # The deployment may already be on the server from an earlier serve: that proves nothing
        # about this runner, so watch it a few seconds more before reporting success.
        wait_for_deployment(root, api_url, deployment, process, offset)
        confirm_alive(process, log, offset)
    except ServeError:
        stop(root)
        raise
    return api_url, process.pid


def stop(root: Path) -> list[str]:
    """Stop the serving process and the server started by `start_*`; returns what was stopped."""
    stopped = []
    for name in ("serve", "prefect-server"):
        pid_file = state_dir(root) / f"{name}.pid"
        if not pid_file.is_file():
            continue
        pid = int(pid_file.read_text())
        try:
            os.killpg(pid, signal.SIGTERM)
            for _ in range(50):
                os.killpg(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
        stopped.append(f"{name} (pid {pid})")
    return stopped
