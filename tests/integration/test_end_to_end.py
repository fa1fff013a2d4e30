"""The whole journey, for real: a throwaway git repository, tiny photos made here, the tiny
profile, the Prefect flow (temporary local server), DVC stages, MLflow on SQLite, the alias, and
the registered model loaded back in a fresh process to derain an image of a new size.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys

import pytest

from tests.workspaces import mlflow_client, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def finished_run(retrained) -> dict:
    """The workspace after one `python -m flows retrain` (tests/conftest.py)."""
    return retrained


def test_metrics_files_hold_finite_numbers(finished_run):
    workspace, params = finished_run["workspace"], finished_run["params"]
    metrics = json.loads((workspace / params["paths"]["evaluation"] / "metrics.json").read_text())
    suites = params["synthesize"]["suites"]
    for suite in params["evaluate"]["suites"]:
        if suites[suite].get("generator") == "clean":  # a dry suite has no rain region and no input score
            assert math.isfinite(metrics[f"psnr/{suite}"]) and f"psnr_rain/{suite}" not in metrics
            continue
        for key in ("psnr", "psnr_rain", "psnr_bg", "psnr_input", "psnr_rain_input"):
            assert math.isfinite(metrics[f"{key}/{suite}"]), f"{key}/{suite} = {metrics.get(f'{key}/{suite}')}"
    assert "registered model: raincheck-derain version 1" in finished_run["stdout"]
    assert "mlflow ui" in finished_run["stdout"]


def test_version_registered_with_lineage_and_alias(finished_run):
    workspace, env = finished_run["workspace"], finished_run["env"]
    client = mlflow_client(workspace, env)
    candidate = client.get_model_version_by_alias("raincheck-derain", "candidate")
    prior = client.get_model_version_by_alias("raincheck-prior", "current")
    out = {"version": str(candidate.version), "tags": candidate.tags, "prior": str(prior.version)}
    assert out["version"] == "1"
    tags = out["tags"]
    assert len(tags["git_commit"]) == 40
    assert len(tags["data_digest"]) == 32  # data.dvc md5 of the pool
    assert len(tags["params_digest"]) == 16
    assert tags["prior_version"] == out["prior"]
    assert tags["gate"] in {"passed", "failed"}
    assert tags["prefect_flow_run_id"]
    assert tags["raincheck.state"] == "aliased"
    model = workspace / finished_run["params"]["paths"]["model"] / "model.pt"
    assert tags["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()  # candidate = the workspace's model


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
    result = run([sys.executable, "-c", script], workspace, env)
    assert "(45, 77, 3) uint8" in result.stdout


def test_dvc_is_clean_and_repro_is_a_no_op(finished_run):
    workspace, env = finished_run["workspace"], finished_run["env"]
    status = run([sys.executable, "-m", "dvc", "status"], workspace, env).stdout
    assert "changed" not in status and "modified" not in status, status
    repro = run([sys.executable, "-m", "dvc", "repro"], workspace, env).stdout
    assert "didn't change, skipping" in repro
    assert "Running stage" not in repro
    assert any(finished_run["remote"].rglob("*")), "dvc push left the remote empty"
