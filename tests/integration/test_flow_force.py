"""`python -m flows retrain --force`: the flag, and the DVC command each forced stage task runs,
checked against real DVC on a two-stage pipeline (the flow itself: tests/integration/test_end_to_end.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.__main__ import _parser
from flows.retrain import lock_entry, stage_command

# Each stage appends its name to runs.txt (not a DVC output) so the test sees what really ran.
STAGE_SCRIPT = """import sys
from pathlib import Path
name, source = sys.argv[1], sys.argv[2:]
text = Path(source[0]).read_text() if source else "start"
Path(f"{name}.txt").write_text(text + name)
with open("runs.txt", "a") as runs:
    runs.write(name + "\\n")
"""
DVC_YAML = """stages:
  first:
    cmd: python stage.py first
    deps: [stage.py]
    outs: [first.txt]
  second:
    cmd: python stage.py second first.txt
    deps: [stage.py, first.txt]
    outs: [second.txt]
"""


def test_retrain_accepts_force_and_says_what_it_does(capsys):
    assert _parser().parse_args(["retrain", "--force"]).force is True
    assert _parser().parse_args(["retrain"]).force is False
    with pytest.raises(SystemExit):
        _parser().parse_args(["retrain", "--help"])
    retrain_help = capsys.readouterr().out
    assert "--force" in retrain_help and "re-run every DVC stage" in retrain_help


def _runner(folder: Path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}

    def run(command: list[str]) -> None:
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"

    return run


def test_forced_stage_command_reruns_that_stage_only(tmp_path: Path):
    run = _runner(tmp_path)

    def runs() -> list[str]:
        return (tmp_path / "runs.txt").read_text().split()

    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"])
    run([sys.executable, "-m", "dvc", "repro"])
    assert runs() == ["first", "second"]

    run(stage_command("second"))  # nothing changed: DVC skips it
    assert runs() == ["first", "second"]
    run(stage_command("second", force=True))  # forced: runs (not restored from the run cache), upstream untouched
    assert runs() == ["first", "second", "second"]
    assert (tmp_path / "second.txt").read_text() == "startfirstsecond"


def test_the_lock_entry_says_whether_a_stage_ran_skipped_or_was_restored(tmp_path: Path):
    """What run_stage compares: the stage's dvc.lock entry before and after `dvc repro <stage>`.
    Skipped: unchanged. Computed: changed. Restored from DVC's run cache (its code put back as it
    was): changed too, though nothing ran (the flow reports it as run: its outputs are new)."""
    run = _runner(tmp_path)
    runs = lambda: (tmp_path / "runs.txt").read_text().split()  # noqa: E731
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"])
    assert lock_entry(tmp_path, "first") is None  # no dvc.lock yet
    run(stage_command("first"))
    computed = lock_entry(tmp_path, "first")
    assert computed["outs"][0]["path"] == "first.txt" and runs() == ["first"]

    run(stage_command("first"))  # nothing changed: skipped
    assert lock_entry(tmp_path, "first") == computed and runs() == ["first"]

    (tmp_path / "stage.py").write_text(STAGE_SCRIPT + "# edited\n")  # a code dep changed: computed
    run(stage_command("first"))
    edited = lock_entry(tmp_path, "first")
    assert edited != computed and runs() == ["first", "first"]

    (tmp_path / "stage.py").write_text(STAGE_SCRIPT)  # back as it was: DVC restores it from its run cache
    run(stage_command("first"))
    assert lock_entry(tmp_path, "first") == computed != edited and runs() == ["first", "first"]
