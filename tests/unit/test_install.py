"""pipeline.install: `make venv` hands pip's configuration to uv, and refuses what it cannot use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.install import main, pip_settings, uv_arguments


def test_pip_configuration_reaches_uv_with_variables_over_files(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://mirror.invalid/simple\n"
                      "extra-index-url = file:///a/simple file:///b/simple\nconstraint = /c.txt\nfind-links = /from-file\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/from-variable")
    settings = pip_settings()
    assert settings["find-links"] == ["/from-variable"]  # PIP_* wins over the file, as in pip
    arguments = uv_arguments(settings)
    assert arguments[:2] == ["--index-strategy", "unsafe-best-match"]
    pairs = list(zip(arguments[2::2], arguments[3::2]))
    assert ("--index-url", "https://mirror.invalid/simple") in pairs
    assert ("--extra-index-url", "file:///a/simple") in pairs and ("--extra-index-url", "file:///b/simple") in pairs
    assert ("--constraint", "/c.txt") in pairs and ("--find-links", "/from-variable") in pairs
    assert ("--find-links", "/from-file") not in pairs


def test_keys_uv_has_no_option_for_are_left_out():
    assert uv_arguments({"default-timeout": ["180"], "cert": ["/ca.pem"]}) == ["--index-strategy", "unsafe-best-match"]


def test_a_missing_requirements_file_is_named(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nope.txt"
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # as inside a virtual environment
    with pytest.raises(SystemExit) as exited:
        main(["--requirements", str(missing)])
    assert exited.value.code == 2 and f"{missing} is not a file" in capsys.readouterr().err


def test_outside_a_virtual_environment_it_refuses_to_install(tmp_path):
    """The system interpreter (no venv): nothing is installed into it."""
    system_python = getattr(sys, "_base_executable", sys.executable)
    result = subprocess.run([system_python, "-m", "pipeline.install", "--requirements", str(tmp_path / "r.txt")],
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 2 and "virtual environment" in result.stderr
