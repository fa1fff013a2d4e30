"""`raincheck predict` runs the served model's code: the same image gives byte-identical PNGs from
the CLI (registered version, or a local checkpoint) and from the pyfunc that `mlflow models serve`
loads. Real MLflow on SQLite, the real CLI in a subprocess; the model is a real checkpoint of a
seeded `resnet_tiny` whose weights are jittered so that it is not the identity."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    """A workspace with model.pt, logged and registered as `candidate` the way register.py logs it."""
    import mlflow
    import torch

    from pipeline.config import load_params
    from pipeline.models.factory import create_model, derain_checkpoint, parse_spec
    from pipeline.registry.mlflow_log import log_derain_run
    from pipeline.tracking import CANDIDATE, mlflow_client

    root = tmp_path_factory.mktemp("workspace")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    params = load_params(root / "params.yaml")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "RAINCHECK_MLFLOW_ARTIFACTS": str(root / "art"),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "RAINCHECK_MLFLOW_ARTIFACTS")}
    os.environ.update({key: env[key] for key in saved})
    try:
        torch.manual_seed(0)
        spec = parse_spec("resnet_tiny")
        model = create_model(spec)
        with torch.no_grad():
            for weight in model.parameters():
                weight.add_(0.05 * torch.randn_like(weight))
        checkpoint = root / params.paths.model / "model.pt"
        checkpoint.parent.mkdir(parents=True)
        torch.save(derain_checkpoint(spec, model.state_dict(), None), checkpoint)
        client = mlflow_client()
        _, uri = log_derain_run(client, params, root, {"raincheck.kind": "derain"}, {})
        version = mlflow.register_model(uri, params.register.model_name)
        client.set_registered_model_alias(params.register.model_name, CANDIDATE, version.version)
        yield {"root": root, "env": env, "params": params, "checkpoint": checkpoint}
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _cli(ws: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "predict", "--params", str(ws["root"] / "params.yaml"), "--root", str(ws["root"]), *args]
    done = subprocess.run(command, cwd=ws["root"], env=ws["env"], capture_output=True, text=True, timeout=300)
    assert done.returncode == code, done.stderr[-3000:]
    return done


def test_cli_and_served_pyfunc_answer_byte_identical_pngs(registered, tmp_path):
    import mlflow.pyfunc

    from pipeline.serving.codec import IMAGE_COLUMN

    source = tmp_path / "in"
    source.mkdir()
    rainy = (np.random.default_rng(7).random((48, 66, 3)) * 255).astype(np.uint8)
    Image.fromarray(rainy).save(source / "rainy.jpg", quality=90)
    params, name = registered["params"], registered["params"].register.model_name

    # What the HTTP server computes: the registered model as `mlflow models serve` loads it.
    request = pd.DataFrame({IMAGE_COLUMN: [base64.b64encode((source / "rainy.jpg").read_bytes()).decode()]})
    answer = base64.b64decode(mlflow.pyfunc.load_model(f"models:/{name}@candidate").predict(request)[IMAGE_COLUMN].iloc[0])
    derained = np.asarray(Image.open(io.BytesIO(answer)))
    assert derained.shape == rainy.shape and not np.array_equal(derained, np.asarray(Image.open(source / "rainy.jpg")))

    _cli(registered, str(source / "rainy.jpg"), str(tmp_path / "registered.png"), "--version", "candidate")
    assert (tmp_path / "registered.png").read_bytes() == answer

    # A local checkpoint runs the same class; a file the model refuses is skipped with the model's reason.
    (source / "bad.png").write_bytes(b"\x89PNG not really")
    done = _cli(registered, str(source), str(tmp_path / "local"), "--checkpoint", str(registered["checkpoint"]), code=1)
    assert (tmp_path / "local" / "rainy.png").read_bytes() == answer
    skipped = [line for line in done.stderr.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped {source / 'bad.png'}: not an image (no format Pillow can read)"], done.stderr[-2000:]

    # --tile reaches the served model's config: 66 px wide in tiles of 64, tiled as the pyfunc tiles.
    _cli(registered, str(source / "rainy.jpg"), str(tmp_path / "tiled.png"), "--version", "candidate", "--tile", "64")
    tiled = mlflow.pyfunc.load_model(f"models:/{name}@candidate", model_config={"tile": 64, "overlap": params.evaluate.overlap})
    assert (tmp_path / "tiled.png").read_bytes() == base64.b64decode(tiled.predict(request)[IMAGE_COLUMN].iloc[0])
