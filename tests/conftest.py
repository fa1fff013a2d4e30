"""Shared fixtures. Tests make their own tiny images; the real pool is for pipeline runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.runtime import quiet_environment

quiet_environment(os.environ)

REPO = Path(__file__).resolve().parents[1]


def textured_photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A synthetic 'photo': smooth gradient + blobs + texture; uint8 HxWx3 in [0, 255]."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [xx / width, yy / height, 0.5 + 0.5 * np.sin((xx + yy) / rng.uniform(5, 40))], axis=-1
    )
    texture = rng.uniform(0, rng.uniform(0.0, 0.6)) * rng.random((height, width, 1))
    image = 0.7 * base + texture
    return np.clip(image * 255, 0, 255).astype(np.uint8)


# tests/<layer>/ mirrors the code: unit (pure logic, params, CLI errors), data (ingest, curation,
# rain), model (networks, training, evaluation), integration (real Prefect/DVC/MLflow/servers).
# Each test gets its folder's marker, so `pytest -m data` runs one layer.
TEST_LAYERS = ("unit", "data", "model", "integration")


def pytest_collection_modifyitems(config, items):
    for item in items:
        layer = Path(str(item.fspath)).parent.name
        if layer in TEST_LAYERS:
            item.add_marker(getattr(pytest.mark, layer))


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_uris_stay_with_their_test():
    """mlflow.set_tracking_uri/set_registry_uri write os.environ (for subprocesses) and module
    globals; monkeypatch only restores what it set itself. Put both back after every test, so
    one test's SQLite registry never becomes the next test's (or its children's) registry."""
    saved = {key: os.environ.get(key) for key in MLFLOW_URI_VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    import sys

    if "mlflow" in sys.modules:  # reset the globals only where a test imported mlflow
        import mlflow

        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        if saved["MLFLOW_REGISTRY_URI"] is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """Twelve distinct synthetic RGB photos (160x200 PNG/JPEG) in a folder."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        image = textured_photo(rng, 160, 200)
        suffix = "png" if i % 2 else "jpg"
        Image.fromarray(image).save(folder / f"photo_{i:02d}.{suffix}")
    return folder


@pytest.fixture(scope="session")
def retrained(tmp_path_factory) -> dict:
    """A throwaway workspace after one real `python -m flows retrain` on the tiny profile.

    Built once per test worker: the end-to-end tests read it as is; every module that registers,
    promotes, serves, retrains or runs a study there takes its own `retrained_copy` instead of a
    flow run of its own.
    """
    import sys

    from tests.workspaces import make_workspace, run

    base = tmp_path_factory.mktemp("retrained")
    workspace, env, params = make_workspace(base)
    flow = run([sys.executable, "-m", "flows", "retrain", "--root", str(workspace)], workspace, env)
    return {"workspace": workspace, "remote": base / "remote", "env": env, "stdout": flow.stdout, "params": params}


@pytest.fixture(scope="module")
def retrained_copy(retrained, tmp_path_factory) -> dict:
    """A module's own copy of the `retrained` workspace (registry, artifacts and DVC cache
    included), for tests that promote, register, serve or retrain: the shared session workspace
    stays as the end-to-end tests expect it, whatever the order the modules run in."""
    from tests.workspaces import child_env, copy_workspace

    workspace = copy_workspace(retrained["workspace"], tmp_path_factory.mktemp("copy") / "ws")
    return {**retrained, "workspace": workspace, "env": child_env(workspace)}
