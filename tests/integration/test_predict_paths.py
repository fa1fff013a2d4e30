"""`raincheck predict` refuses command lines that would overwrite data, before any model loads.

These run the real CLI in a folder with no registry at all: a refusal that needed the model
would fail differently (no registered model), so each test also proves the check comes first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO


def _predict(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pipeline", "predict", "--params", str(REPO / "params.yaml"), "--root", str(cwd), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rainy = tmp_path / "D"
    rainy.mkdir()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(rainy / "a.png")
    (tmp_path / "notes.txt").write_text("keep me\n")
    return rainy


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("D", "D"), "the output is the input"),
        (("D/a.png", "D/a.png"), "the output is the input"),
        (("D", "D/out"), "inside the input folder"),
        (("D/a.png", "notes.txt"), "must end in .png"),
        (("D", "notes.txt"), "is not a folder"),
    ],
)
def test_predict_refuses_before_the_model_loads(folder, args, message):
    before = (folder / "a.png").read_bytes()
    done = _predict(folder.parent, *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert (folder / "a.png").read_bytes() == before
    assert (folder.parent / "notes.txt").read_text() == "keep me\n"


def test_predict_refuses_an_output_file_that_is_a_folder(folder):
    (folder.parent / "out").mkdir()
    (folder.parent / "out" / "a.png").mkdir()  # the output for D/a.png is a folder
    done = _predict(folder.parent, "D", "out")
    assert done.returncode == 1 and "out/a.png: exists and is not a file" in done.stderr


def test_same_stem_outputs_keep_their_suffix(tmp_path):
    from pipeline.serving.predict import plan

    for name in ("same.png", "same.jpg", "other.png"):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / name)
    (tmp_path / "dir.png").mkdir()
    pairs, skipped = plan(tmp_path, tmp_path.parent / "out")
    names = sorted(out.name for _, out in pairs)
    assert names == ["other.png", "same.jpg.png", "same.png.png"]
    assert [p.name for p, _ in skipped] == ["dir.png"]
