"""Throwaway raincheck workspaces for integration tests: a git repo, DVC with a local remote,
the project code, the tiny profile and a folder of tiny photos made here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pipeline.config import read_params

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pipeline", "flows", "dvc.yaml", "pyproject.toml", ".dvcignore")
# The child processes must use the workspace's own project-local state, not the caller's.
# MLFLOW_REGISTRY_URI too: mlflow.set_registry_uri() exports it into os.environ, so an in-process
# test that opened a registry would otherwise point every later child at that test's database.
CHILD_ENV_DROP = ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                  "RAINCHECK_MLFLOW_ARTIFACTS", "DVC_SITE_CACHE_DIR")


def child_env(workspace: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env.update(
        GIT_AUTHOR_NAME="raincheck test", GIT_AUTHOR_EMAIL="test@raincheck.local",
        GIT_COMMITTER_NAME="raincheck test", GIT_COMMITTER_EMAIL="test@raincheck.local",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(workspace),
        **extra,
    )
    return env


def run(command: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command; on failure the assertion shows its output."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def write_photos(folder: Path, count: int, seed: int = 7, size: tuple[int, int] = (150, 180)) -> None:
    from PIL import Image

    from tests.conftest import textured_photo

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(textured_photo(rng, *size)).save(folder / f"p{seed}_{i:02d}.png")


def copy_project(workspace: Path) -> None:
    """Copy the project's code and config (PROJECT_FILES, no caches) into an existing directory."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, workspace / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, workspace / name)


def make_workspace(base: Path, photo_count: int = 10) -> tuple[Path, dict, dict]:
    """(workspace, child env, params dict) with everything committed to git."""
    workspace, photos, remote = base / "ws", base / "photos", base / "remote"
    workspace.mkdir(parents=True)
    write_photos(photos, photo_count)
    copy_project(workspace)
    params = read_params(REPO / "profiles" / "tiny.yaml")  # the overlay merged onto cpu.yaml
    params["ingest"]["sources"] = [{"type": "folder", "path": str(photos), "licence": "test images"}]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workspace / ".gitignore").write_text("/data\n.raincheck/\n__pycache__/\n/build/registry/\n")
    env = child_env(workspace)
    run(["git", "init", "-q", "-b", "main"], workspace, env)
    run([sys.executable, "-m", "dvc", "init", "-q"], workspace, env)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], workspace, env)
    from pipeline.workspace import install_plot_templates

    install_plot_templates(workspace)  # as prepare_workspace does: dvc.yaml's plots name a custom template
    run(["git", "add", "-A"], workspace, env)
    run(["git", "commit", "-q", "-m", "workspace"], workspace, env)
    return workspace, env, params


def mlflow_client(workspace: Path, env: dict):
    """An MlflowClient in this process on the store a command run with `env` in `workspace` uses
    (its MLFLOW_TRACKING_URI, else the workspace's project-local SQLite): reading the registry
    here costs milliseconds, where a child process would spend seconds importing MLflow."""
    from mlflow import MlflowClient

    from pipeline.runtime import project_environment

    uri = project_environment(workspace, dict(env))["MLFLOW_TRACKING_URI"]
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def alias_number(client, alias: str, model: str = "raincheck-derain") -> str | None:
    """The number (a string) of the version `alias` points at, or None when it is not set
    (pipeline.tracking.alias_version, as the registration reads it)."""
    from pipeline.tracking import alias_version

    version = alias_version(client, model, alias)
    return None if version is None else str(version.version)


def copy_workspace(source: Path, dest: Path) -> Path:
    """A private copy of a workspace with its `.raincheck` state (MLflow registry and artifacts, DVC
    cache): a test that promotes, registers or retrains there leaves the source as it was.

    MLflow stores absolute artifact locations in its SQLite database: every text cell naming the
    source workspace is rewritten to name the copy, so new artifacts land in the copy too."""
    import sqlite3

    shutil.copytree(source, dest, symlinks=True)
    database = dest / ".raincheck" / "mlflow.db"
    if database.is_file():
        old, new = str(source), str(dest)
        with sqlite3.connect(database) as connection:
            tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                for column in connection.execute(f'PRAGMA table_info("{table}")').fetchall():
                    if column[2].upper() in ("TEXT", "VARCHAR") or column[2].upper().startswith("VARCHAR"):
                        connection.execute(f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                                           f'WHERE "{column[1]}" LIKE ?', (old, new, f"%{old}%"))
    return dest


def pooled_workspace(base):
    """A tiny workspace whose pool is ingested and tracked by data.dvc (what the cells check out)."""
    workspace, env, params = make_workspace(base)
    run([sys.executable, "-m", "pipeline", "ingest"], workspace, env)
    run([sys.executable, "-m", "dvc", "add", "--quiet", params["paths"]["pool"]], workspace, env)
    return workspace, env, params


def tiny_dask_study(params: dict, workers: int, seeds: list[int], iterations: int) -> dict:
    """The tiny profile plus a 1-configuration grid over `seeds` on a local Dask cluster."""
    return {**params, "study": {
        "grid": {"train.rain.presets": [["small"]]},
        "seeds": seeds,
        "fixed": {"train.iterations": iterations, "train.val_every": max(1, iterations // 5), "train.threads": 1},
        "workers": workers,
        "task_runner": "dask",
        "ood_suites": ["unseen", "screen"],
        "convergence_tolerance_db": 20.0,  # a few iterations settle nothing: the runner is what is measured
        "bootstrap": 200,
        "floor": -100.0,
        "heatmap": {"x": "train.rain.presets", "y": "train.rain.presets", "facets": []},
    }}
