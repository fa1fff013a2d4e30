"""The registry commands, `raincheck predict` and `raincheck serve-model` (`mlflow models serve`),
for real, on this module's own copy of the workspace the end-to-end test retrained
(tests/conftest.py `retrained_copy`): promoting here leaves the shared workspace untouched."""

from __future__ import annotations

import base64
import hashlib
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

from tests.workspaces import alias_number, mlflow_client, run

SHARED_STATE = (".raincheck/mlflow.db",)


def _digests(workspace) -> dict[str, str]:
    return {name: hashlib.sha256((workspace / name).read_bytes()).hexdigest() for name in SHARED_STATE}


@pytest.fixture(scope="module")
def ws(retrained, retrained_copy):
    """This module's copy; on the way out, the shared workspace's registry must be as it was."""
    before = _digests(retrained["workspace"])
    yield retrained_copy
    assert _digests(retrained["workspace"]) == before, "a serving test changed the shared retrained workspace"

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _raincheck(ws, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", *args]
    if check:
        return run(command, ws["workspace"], ws["env"])
    return subprocess.run(command, cwd=ws["workspace"], env=ws["env"], capture_output=True, text=True, timeout=300)


def _alias(ws, alias: str) -> str | None:
    return alias_number(mlflow_client(ws["workspace"], ws["env"]), alias)


def test_registry_show_promote_and_rollback(ws):
    shown = _raincheck(ws, "registry", "show").stdout
    assert "registered model: raincheck-derain" in shown and "candidate" in shown

    refused = _raincheck(ws, "registry", "promote", "1", check=False)
    assert refused.returncode != 0 and "--reason" in refused.stderr

    # Identity is the weights: a new commit with the same model.pt registers nothing new.
    run(["git", "commit", "-q", "--allow-empty", "-m", "next"], ws["workspace"], ws["env"])
    registered = json.loads(_raincheck(ws, "register").stdout)
    assert registered["version"] == "1" and not registered["created"]

    _raincheck(ws, "registry", "promote", "1", "--reason", "baseline")
    assert _alias(ws, "champion") == "1"  # promotions and rollbacks: tests/integration/test_registry_lifecycle.py


def test_predict_derains_a_folder_of_odd_sizes(ws, tmp_path):
    source, target = tmp_path / "rainy", tmp_path / "derained"
    source.mkdir()
    rng = np.random.default_rng(3)
    sizes = [(37, 53), (70, 41)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(source / f"r{i}.jpg")
    _raincheck(ws, "predict", str(source), str(target), "--version", "candidate")
    for i, (h, w) in enumerate(sizes):
        assert np.asarray(Image.open(target / f"r{i}.png")).shape == (h, w, 3)
    missing = _raincheck(ws, "predict", str(tmp_path / "nope"), str(target), check=False)
    assert missing.returncode != 0 and "no such image or folder" in missing.stderr


def test_predict_skips_bad_entries_and_keeps_same_stems_apart(ws, tmp_path):
    """One corrupt image and a folder named x.png are reported and skipped; the rest are written;
    same.png and same.jpg do not overwrite each other; the exit code says something was skipped."""
    source, target = tmp_path / "rainy", tmp_path / "derained"
    source.mkdir()
    rng = np.random.default_rng(4)
    for name in ("a.png", "same.png", "same.jpg", "z.png"):
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(source / name)
    (source / "b_corrupt.png").write_bytes(b"\x89PNG not really")
    (source / "x.png").mkdir()
    done = _raincheck(ws, "predict", str(source), str(target), "--version", "candidate", check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "b_corrupt.png" in done.stderr and "x.png" in done.stderr and "2 input(s) skipped" in done.stderr
    assert "wrote 4 derained" in done.stdout
    written = sorted(p.name for p in target.iterdir())
    assert written == ["a.png", "same.jpg.png", "same.png.png", "z.png"]
    clean = _raincheck(ws, "predict", str(source / "a.png"), str(tmp_path / "one.png"), "--version", "candidate")
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


def _b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_serve_model_starts_without_the_venv_on_path_and_answers(ws):
    """The README's command, `raincheck serve-model`, with a PATH that lacks the venv (where bare
    `mlflow models serve` exits 127: `exec: uvicorn: not found`); then good, bad and oversized rows."""
    from pipeline.serving.codec import SERVING_MAX_PIXELS

    workspace = ws["workspace"]
    env = {**ws["env"], "PATH": "/usr/bin:/bin"}
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "serve-model", "--version", "candidate", "--port", str(port)],
                              cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        grey16 = np.full((20, 24), 128 * 257, dtype=np.uint16)
        grey8 = np.full((20, 24, 3), 128, dtype=np.uint8)
        status, body = _post(f"{base}/invocations", {"dataframe_records": [
            {"image": _b64(Image.fromarray(image))}, {"image": "not base64!"},
            {"image": _b64(Image.fromarray(grey16))}, {"image": _b64(Image.fromarray(grey8))}]})
        assert status == 200, body
        rows = body["predictions"]
        derained = np.asarray(Image.open(io.BytesIO(base64.b64decode(rows[0]["image"]))))
        assert derained.shape == (48, 66, 3) and derained.dtype == np.uint8 and rows[0]["error"] is None
        assert rows[1]["image"] is None and rows[1]["error"].startswith("row 1: column 'image': not valid base64")
        assert rows[2]["image"] == rows[3]["image"]  # 16-bit mid grey is served as ingest decodes it: 8-bit 128

        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": "not base64!"}]})
        assert status == 400 and "row 0: column 'image': not valid base64" in body["message"], body
        assert "stack_trace" not in body and str(workspace) not in json.dumps(body) and "Traceback" not in json.dumps(body)
        side = int(SERVING_MAX_PIXELS ** 0.5) + 1
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"image": _b64(Image.new("RGB", (side, side)))}]})
        assert status == 400 and f"pixels > the serving limit max_pixels={SERVING_MAX_PIXELS}" in body["message"], body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_model_refuses_an_unknown_version_before_any_server(ws):
    done = _raincheck(ws, "serve-model", "--version", "nosuch", check=False)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: ") and "nosuch" in done.stderr


def test_predict_decodes_like_ingest(ws, tmp_path):
    """A 16-bit PNG through `raincheck predict` gives what its 8-bit equivalent gives (not white);
    an RGBA photo is composited on white; a float TIFF is skipped with the reason."""
    source, target = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    Image.fromarray(np.full((20, 24), 128 * 257, dtype=np.uint16)).save(source / "g16.png")
    Image.fromarray(np.full((20, 24, 3), 128, dtype=np.uint8)).save(source / "g8.png")
    rgba = np.zeros((20, 24, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(source / "clear.png")
    Image.fromarray(np.full((20, 24, 3), 255, dtype=np.uint8)).save(source / "white.png")
    Image.fromarray(np.full((8, 8), 0.5, np.float32), "F").save(source / "float.tif")
    done = _raincheck(ws, "predict", str(source), str(target), "--version", "candidate", check=False)
    assert done.returncode == 1 and "skipped" in done.stderr and "floating-point pixels" in done.stderr, done.stderr[-2000:]
    read = lambda name: np.asarray(Image.open(target / name))  # noqa: E731
    assert np.array_equal(read("g16.png"), read("g8.png"))
    assert np.array_equal(read("clear.png"), read("white.png"))
