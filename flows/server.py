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

DEFAULT_PORT = 4200


def state_dir(root: Path) -> Path:
    path = Path(root) / ".raincheck"
    path.mkdir(parents=True, exist_ok=True)
    return path


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _spawn(command: list[str], root: Path, name: str, env: dict) -> int:
    """Start a detached process (own session) logging to .raincheck/<name>.log; returns its pid."""
    state = state_dir(root)
    log = (state / f"{name}.log").open("ab")
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (state / f"{name}.pid").write_text(str(process.pid))
    return process.pid


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
    raise RuntimeError(f"Prefect server did not answer on {api_url} within {timeout:.0f} s; see {state_dir(root) / 'prefect-server.log'}")


def wait_for_deployment(root: Path, api_url: str, name: str, pid: int, timeout: float = 180) -> None:
    """Block until the served deployment is registered on the server (or the serving process died)."""
    url = f"{api_url.rstrip('/')}/deployments/name/{name}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise RuntimeError(f"the serving process exited; see {state_dir(root) / 'serve.log'}") from None
        time.sleep(1)
    raise RuntimeError(f"deployment {name} did not appear on {api_url} within {timeout:.0f} s; see {state_dir(root) / 'serve.log'}")


def start_serving(root: Path, api_url: str) -> int:
    """Start `python -m flows serve-foreground` (the deployments' runner) detached; returns its pid."""
    env = {**os.environ, "PREFECT_API_URL": api_url}
    return _spawn([sys.executable, "-m", "flows", "serve-foreground", "--root", str(root)], root, "serve", env)


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
