"""The registry commands, `raincheck predict` and `mlflow models serve`, for real, on the
workspace the end-to-end test retrained (tests/conftest.py)."""

from __future__ import annotations

import base64
import io
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.workspaces import mlflow_query, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _raincheck(retrained, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", *args]
    if check:
        return run(command, retrained["workspace"], retrained["env"])
    return subprocess.run(command, cwd=retrained["workspace"], env=retrained["env"], capture_output=True, text=True, timeout=300)


def _alias(retrained, alias: str) -> str | None:
    return json.loads(mlflow_query(retrained["workspace"], retrained["env"], (
        "from mlflow.exceptions import MlflowException\n"
        f"try:\n    v = str(c.get_model_version_by_alias('raincheck-derain', '{alias}').version)\n"
        "except MlflowException:\n    v = None\n"
        "print(json.dumps(v))\n"
    )))


def test_registry_show_promote_and_rollback(retrained):
    shown = _raincheck(retrained, "registry", "show").stdout
    assert "registered model: raincheck-derain" in shown and "candidate" in shown

    refused = _raincheck(retrained, "registry", "promote", "1", check=False)
    assert refused.returncode != 0 and "--reason" in refused.stderr

    # Identity is the weights: a new commit with the same model.pt registers nothing new.
    run(["git", "commit", "-q", "--allow-empty", "-m", "next"], retrained["workspace"], retrained["env"])
    registered = json.loads(_raincheck(retrained, "register").stdout)
    assert registered["version"] == "1" and not registered["created"]

    _raincheck(retrained, "registry", "promote", "1", "--reason", "baseline")
    assert _alias(retrained, "champion") == "1"  # promotions and rollbacks: tests/test_registry_lifecycle.py


def test_predict_derains_a_folder_of_odd_sizes(retrained, tmp_path):
    source, target = tmp_path / "rainy", tmp_path / "derained"
    source.mkdir()
    rng = np.random.default_rng(3)
    sizes = [(37, 53), (70, 41)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(source / f"r{i}.jpg")
    _raincheck(retrained, "predict", str(source), str(target), "--version", "candidate")
    for i, (h, w) in enumerate(sizes):
        assert np.asarray(Image.open(target / f"r{i}.png")).shape == (h, w, 3)
    missing = _raincheck(retrained, "predict", str(tmp_path / "nope"), str(target), check=False)
    assert missing.returncode != 0 and "no such image or folder" in missing.stderr


def test_predict_skips_bad_entries_and_keeps_same_stems_apart(retrained, tmp_path):
    """One corrupt image and a folder named x.png are reported and skipped; the rest are written;
    same.png and same.jpg do not overwrite each other; the exit code says something was skipped."""
    source, target = tmp_path / "rainy", tmp_path / "derained"
    source.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a.png", "same.png", "same.jpg", "z.png"):
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(source / name)
    (source / "b_corrupt.png").write_bytes(b"\x89PNG not really")
    (source / "x.png").mkdir()
    done = _raincheck(retrained, "predict", str(source), str(target), "--version", "candidate", check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "b_corrupt.png" in done.stderr and "x.png" in done.stderr and "2 input(s) skipped" in done.stderr
    assert "wrote 4 derained" in done.stdout
    written = sorted(p.name for p in target.iterdir())
    assert written == ["a.png", "same.jpg.png", "same.png.png", "z.png"]
    clean = _raincheck(retrained, "predict", str(source / "a.png"), str(tmp_path / "one.png"), "--version", "candidate")
    assert clean.returncode == 0 and (tmp_path / "one.png").is_file()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_mlflow_models_serve_answers_an_image(retrained):
    workspace, env = retrained["workspace"], retrained["env"]
    tracking = f"sqlite:///{workspace / '.raincheck' / 'mlflow.db'}"
    port = _free_port()
    mlflow_cli = str(__import__("pathlib").Path(sys.executable).parent / "mlflow")
    server = subprocess.Popen(
        [mlflow_cli, "models", "serve", "-m", "models:/raincheck-derain@candidate", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=workspace, env={**env, "MLFLOW_TRACKING_URI": tracking}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                time.sleep(1)
        image = (np.random.default_rng(5).random((48, 66, 3)) * 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": base64.b64encode(buffer.getvalue()).decode()}]})
        assert status == 200, body
        derained = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["predictions"][0]["image"]))))
        assert derained.shape == (48, 66, 3) and derained.dtype == np.uint8
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": "not base64!"}]})
        assert status >= 400 and "base64" in json.dumps(body)
    finally:
        server.terminate()
        server.wait(timeout=30)
