"""Where things live and which services stay quiet: environment defaults for every process.

Called explicitly by the CLI, the flows and the tests (never at import time). Only sets a
variable when the user has not set it, so `PREFECT_API_URL`, `MLFLOW_TRACKING_URI` and friends
can always point elsewhere.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

# A workspace's local state (Prefect home, MLflow database and artifacts, locks, server logs, the
# study's cells): never tracked, always under this folder of the workspace root.
STATE_DIR = ".raincheck"


def state_path(root: Path | str, *parts: str) -> Path:
    """`root/.raincheck/<parts...>`, as given (not resolved, not created): the one spelling of it."""
    return Path(root, STATE_DIR, *parts)


@contextlib.contextmanager
def held_lock(path: Path, timeout: float, busy: Callable[[Path], Exception]) -> Iterator[None]:
    """Hold the file lock `path` (its folder created) for the with-block. If another process holds
    it for longer than `timeout` s (0: fail at once), raise `busy(path)`: each lock names its own
    error and what the user should do."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise busy(path) from None
    try:
        yield
    finally:
        lock.release()


# Telemetry off in everything raincheck starts (see the README's "Privacy" note).
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}


# torch's CPU allocator backs buffers of 2 MiB and more with transparent huge pages (madvise).
# Without it every fresh activation of a large image pays a page fault per 4 KiB: allocating and
# filling 64 MiB took 45-60 ms against 7 ms for a reused buffer, 10-14 ms with this set
# (benchmarks/README.md, "Evaluation and inference"). torch reads it at its first allocation.
FAST_ALLOCATION = {"THP_MEM_ALLOC_ENABLE": "1"}


def fast_allocation(env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Ask torch's CPU allocator for huge pages (without overriding the user's setting)."""
    for key, value in FAST_ALLOCATION.items():
        env.setdefault(key, value)
    return env


# The CPU code paths of torch's kernels, pinned to AVX2 (README, "Determinism"). ATen, oneDNN
# and MKL otherwise pick their kernels by the CPU's widest SIMD, and an AVX-512 machine then sums
# in another order than an AVX2 one: training drifts apart by float round-off. On AVX2 machines
# (the reference one) this is what they pick anyway: the same weights, the same speed (measured);
# on AVX-512 machines it gives up their wider kernels for numbers comparable with the others.
PINNED_DISPATCH = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pin_cpu_dispatch(env: MutableMapping[str, str] = os.environ, flags: set[str] | None = None) -> MutableMapping[str, str]:
    """Pin torch's CPU kernels to AVX2 (PINNED_DISPATCH) where the CPU has AVX2 and FMA; elsewhere
    nothing (ATen's AVX2 kernels would not run). Never over the user's own setting, so e.g.
    `ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=ALL MKL_CBWR=AUTO` takes the fastest paths back.
    Must run before torch's first kernel: each library reads its variable once."""
    if {"avx2", "fma"} <= (_cpu_flags() if flags is None else flags):
        for key, value in PINNED_DISPATCH.items():
            env.setdefault(key, value)
    return env


def quiet_environment(env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Switch telemetry off (without overriding anything the user set)."""
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)
    return env


def project_environment(root: Path, env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """Telemetry off, fast allocation, and project-local homes for Prefect, MLflow and DVC under
    `root/.raincheck`.

    Sets (only when unset): PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    MLFLOW_TRACKING_URI (SQLite), RAINCHECK_MLFLOW_ARTIFACTS, DVC_SITE_CACHE_DIR.
    The DVC remote is configured in .dvc/config (`~/.cache/raincheck/dvc-remote`).
    """
    root = Path(root).resolve()
    state = state_path(root)
    quiet_environment(env)
    fast_allocation(env)
    env.setdefault("PREFECT_HOME", str(state / "prefect"))
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect creates only the last level
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    env.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{state / 'mlflow.db'}")
    env.setdefault("RAINCHECK_MLFLOW_ARTIFACTS", str(state / "mlartifacts"))
    env.setdefault("DVC_SITE_CACHE_DIR", str(state / "dvc-site-cache"))
    return env


def cache_dir() -> Path:
    """Download cache for registry packages (wheels, .debs): $RAINCHECK_CACHE or ~/.cache/raincheck."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "raincheck"
    return Path(os.environ.get("RAINCHECK_CACHE", default))
