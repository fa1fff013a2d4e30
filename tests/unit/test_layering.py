"""`python -m pipeline.layering` (`make check-layout`): the repository passes, and the check finds
what it is there for, on a copy of the code with a function-level import cycle, an import against
the layers, an unplaced module and a file name spelled twice."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.layering"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(root)})


def test_the_repository_has_no_cycle_no_layer_breach_and_one_spelling_per_file_name():
    done = _check(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 finding(s)" in done.stdout and "cli > registry|study_report" in done.stdout


def _append(path: Path, text: str) -> int:
    """Append `text` to `path`; the line number of its first line."""
    before = path.read_text()
    path.write_text(before + text)
    return before.count("\n") + 1


def test_the_check_names_each_breach_with_its_import_line(tmp_path):
    for package in ("pipeline", "flows"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    line = _append(tmp_path / "pipeline/serving/codec.py", "\n\ndef _lazy():\n    from pipeline.registry import register\n")
    _append(tmp_path / "pipeline/evaluation/metrics.py", "\n\ndef _lazy():\n    from pipeline.training.loop import run_iterations\n")
    (tmp_path / "pipeline/newcomer.py").write_text('"""A module no layer holds yet."""\n')
    _append(tmp_path / "flows/retrain.py", '\nSECOND = f"{Path.cwd()}/model.pt"\n')

    done = _check(tmp_path)
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    text = "\n".join(errors)
    assert "import cycle between pipeline.registry, pipeline.serving" in text
    assert f"pipeline.serving.codec:{line + 3}: from pipeline.registry import register" in text
    assert "import cycle between pipeline.evaluation, pipeline.training" in text
    assert "pipeline.evaluation must not import pipeline.training (pipeline/layering.py LAYERS)" in text
    assert "pipeline.newcomer: in no layer" in text
    assert "'model.pt' is spelled 2 times (flows/retrain.py:" in text and "pipeline/layout.py:" in text
    assert len(errors) == 6, text  # the two cycles, the two upward imports, the newcomer, model.pt
