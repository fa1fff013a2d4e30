"""A workspace that raincheck initialises itself (`dvc init` in prepare_workspace) ignores the
bytecode Python writes into the code folders the stages depend on, as this repository does: without
it, the imports of a later stage make DVC re-run the earlier ones."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.workspace import BYTECODE, ignore_bytecode, prepare_workspace

REPO = Path(__file__).resolve().parents[2]


def test_a_fresh_workspace_ignores_bytecode_for_dvc(tmp_path: Path):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, tmp_path / name)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    prepare_workspace(tmp_path)
    assert (tmp_path / ".dvc").is_dir()
    pyc = tmp_path / "pipeline" / "synthesis" / "__pycache__" / "rain.cpython-311.pyc"
    pyc.parent.mkdir(parents=True)
    pyc.write_bytes(b"\0")
    check = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", str(pyc.relative_to(tmp_path))],
                           cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr  # 0: DVC ignores it

    ignore_bytecode(tmp_path)  # a second call adds nothing
    lines = (tmp_path / ".dvcignore").read_text().splitlines()
    assert lines.count(BYTECODE) == 1
    assert any(line.startswith("#") for line in lines)  # DVC's own header is kept
