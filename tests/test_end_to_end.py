"""The whole journey, for real: a throwaway git repository, tiny photos made here, the tiny
profile, the Prefect flow (temporary local server), DVC stages, MLflow on SQLite, the alias, and
the registered model loaded back in a fresh process to derain an image of a new size.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pipeline", "flows", "dvc.yaml", "pyproject.toml")
CHILD_ENV_DROP = ("PREFECT_HOME", "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "RAINCHECK_MLFLOW_ARTIFACTS", "DVC_SITE_CACHE_DIR")

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _child_env(workspace: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
    env.update(
        GIT_AUTHOR_NAME="raincheck test", GIT_AUTHOR_EMAIL="test@raincheck.local",
        GIT_COMMITTER_NAME="raincheck test", GIT_COMMITTER_EMAIL="test@raincheck.local",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(workspace),
    )
    return env


def _run(command: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict:
    """Build the workspace and run `python -m flows retrain` once for all the assertions below."""
    from tests.conftest import textured_photo
    from PIL import Image

    base = tmp_path_factory.mktemp("e2e")
    workspace, photos, remote = base / "ws", base / "photos", base / "remote"
    workspace.mkdir()
    photos.mkdir()
    rng = np.random.default_rng(7)
    for i in range(10):
        Image.fromarray(textured_photo(rng, 150, 180)).save(photos / f"p{i:02d}.png")
    for name in PROJECT_FILES:
        source = REPO / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, workspace / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {}))
    params = yaml.safe_load((REPO / "profiles" / "tiny.yaml").read_text())
    params["ingest"]["sources"] = [{"type": "folder", "path": str(photos), "licence": "test images"}]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (workspace / ".gitignore").write_text("/data\n.raincheck/\n__pycache__/\n/build/registry/\n")

    env = _child_env(workspace)
    _run(["git", "init", "-q", "-b", "main"], workspace, env)
    _run([sys.executable, "-m", "dvc", "init", "-q"], workspace, env)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(remote)], workspace, env)
    _run(["git", "add", "-A"], workspace, env)
    _run(["git", "commit", "-q", "-m", "workspace"], workspace, env)

    flow = _run([sys.executable, "-m", "flows", "retrain", "--root", str(workspace)], workspace, env)
    return {"workspace": workspace, "remote": remote, "env": env, "stdout": flow.stdout, "params": params}


def test_metrics_files_hold_finite_numbers(finished_run):
    workspace, params = finished_run["workspace"], finished_run["params"]
    metrics = json.loads((workspace / params["paths"]["evaluation"] / "metrics.json").read_text())
    for suite in params["evaluate"]["suites"]:
        for key in ("psnr", "psnr_rain", "psnr_bg", "psnr_input", "psnr_rain_input"):
            assert math.isfinite(metrics[f"{key}/{suite}"]), f"{key}/{suite} = {metrics.get(f'{key}/{suite}')}"
    assert "registered model: raincheck-derain version 1" in finished_run["stdout"]
    assert "mlflow ui" in finished_run["stdout"]


def test_version_registered_with_lineage_and_alias(finished_run):
    workspace, env = finished_run["workspace"], finished_run["env"]
    script = (
        "import json, mlflow\n"
        "from pipeline.runtime import project_environment\n"
        "project_environment('.')\n"
        "c = mlflow.MlflowClient()\n"
        "v = c.get_model_version_by_alias('raincheck-derain', 'candidate')\n"
        "p = c.get_model_version_by_alias('raincheck-prior', 'latest')\n"
        "print(json.dumps({'version': v.version, 'tags': v.tags, 'prior': p.version}))\n"
    )
    out = json.loads(_run([sys.executable, "-c", script], workspace, env).stdout.strip().splitlines()[-1])
    assert out["version"] == "1"
    tags = out["tags"]
    assert len(tags["git_commit"]) == 40
    assert len(tags["data_digest"]) == 32  # data.dvc md5 of the pool
    assert len(tags["params_digest"]) == 16
    assert tags["prior_version"] == out["prior"]
    assert tags["gate"] in {"passed", "failed"}
    assert tags["prefect_flow_run_id"]


def test_registered_model_derains_a_new_size_in_a_fresh_process(finished_run):
    workspace, env = finished_run["workspace"], finished_run["env"]
    script = (
        "import numpy as np, pandas as pd, mlflow\n"
        "from pipeline.runtime import project_environment\n"
        "from pipeline.serving.codec import encode_png, decode_image\n"
        "project_environment('.')\n"
        "m = mlflow.pyfunc.load_model('models:/raincheck-derain@candidate')\n"
        "img = (np.random.default_rng(0).random((45, 77, 3)) * 255).astype('uint8')\n"
        "out = decode_image(m.predict(pd.DataFrame({'image': [encode_png(img)]}))['image'][0])\n"
        "print(out.shape, out.dtype)\n"
    )
    result = _run([sys.executable, "-c", script], workspace, env)
    assert "(45, 77, 3) uint8" in result.stdout


def test_dvc_is_clean_and_repro_is_a_no_op(finished_run):
    workspace, env = finished_run["workspace"], finished_run["env"]
    status = _run([sys.executable, "-m", "dvc", "status"], workspace, env).stdout
    assert "changed" not in status and "modified" not in status, status
    repro = _run([sys.executable, "-m", "dvc", "repro"], workspace, env).stdout
    assert "didn't change, skipping" in repro
    assert "Running stage" not in repro
    assert any(finished_run["remote"].rglob("*")), "dvc push left the remote empty"
