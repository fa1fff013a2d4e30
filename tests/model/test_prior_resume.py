"""The prior step resumes a killed run through the shared training session
(pipeline/training/session.py) to the result of an uninterrupted run: weights, discriminator,
codebook usage and the log all carry over."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import parse_params
from pipeline.io import read_csv
from pipeline.training.prior import run_prior

from tests.conftest import REPO
from tests.model.test_training import build_workspace, tiny_raw


@pytest.mark.slow
def test_killed_prior_resumes_to_the_uninterrupted_result(tmp_path: Path):
    raw = tiny_raw()
    raw["prior"].update(iterations=400, val_every=10, discriminator_weight=0.1)
    params = parse_params(raw)
    reference = build_workspace(tmp_path / "reference", params)
    workspace = build_workspace(tmp_path / "ws", params)  # the same seeded patches
    run_prior(params, reference, show_progress=False)

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    out = workspace / params.paths.prior
    command = [sys.executable, "-m", "pipeline", "prior", "--params", str(params_file), "--root", str(workspace)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
    process.wait()
    assert (out / "checkpoint.pt").exists() and not (out / "prior.pt").exists()

    summary = run_prior(params, workspace, show_progress=False)
    assert summary["resumed_from_step"] > 0 and not (out / "checkpoint.pt").exists()
    resumed = torch.load(out / "prior.pt", weights_only=True)["state_dict"]
    expected = torch.load(reference / params.paths.prior / "prior.pt", weights_only=True)["state_dict"]
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(resumed[key], expected[key], atol=1e-6), key
    assert read_csv(out / "log.csv") == read_csv(reference / params.paths.prior / "log.csv")
