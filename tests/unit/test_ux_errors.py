"""Ordinary mistakes get one line naming what is wrong and what is allowed, exit 1 or 2, no traceback.

Each case is a real subprocess on a real (empty) SQLite registry in a temp folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ux")
    shutil.copy(ROOT / "params.yaml", folder / "params.yaml")
    return folder


def raincheck(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(workspace),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}", "RAINCHECK_MLFLOW_ARTIFACTS": str(workspace / "art")}
    return subprocess.run([sys.executable, "-m", *args], cwd=workspace, env=env, capture_output=True, text=True, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode in (1, 2), result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_promote_without_reason(workspace):
    assert_one_line(raincheck(workspace, "pipeline", "registry", "promote", "1"), "--reason")


def test_promote_unknown_version(workspace):
    assert_one_line(raincheck(workspace, "pipeline", "registry", "promote", "99", "--reason", "x"), "raincheck-derain", "no versions")


def test_rollback_with_nothing_to_roll_back(workspace):
    assert_one_line(raincheck(workspace, "pipeline", "registry", "rollback"), "no champion")


def test_predict_unknown_version(workspace):
    image = workspace / "in.png"
    from PIL import Image

    Image.new("RGB", (16, 16)).save(image)
    assert_one_line(raincheck(workspace, "pipeline", "predict", str(image), str(workspace / "out.png"), "--version", "nosuch"), "raincheck-derain")


def test_root_that_is_not_a_folder(workspace):
    assert_one_line(raincheck(workspace, "pipeline", "registry", "show", "--root", str(workspace / "nowhere")), "--root", "params.yaml")


def test_flow_with_missing_params_fails_before_any_server(workspace):
    start = time.perf_counter()
    result = raincheck(workspace, "flows", "retrain", "--params", "nosuch.yaml")
    assert_one_line(result, "nosuch.yaml")
    assert time.perf_counter() - start < 20  # a Prefect server start alone takes longer
    assert not (workspace / ".raincheck" / "prefect" / "prefect.db").exists()


def test_version_flag(workspace):
    result = raincheck(workspace, "pipeline", "--version")
    assert result.returncode == 0 and result.stdout.startswith("raincheck ")
