"""A checkpoint left beside a stage's current outputs (a killed hand-run `raincheck train`, or a
stage DVC restored from its run cache) is dropped by the next flow, so a later `--force` starts
from step 0 instead of resuming it. On this module's own copy of the retrained workspace."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.workspaces import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_flow_drops_a_checkpoint_beside_current_outputs(retrained_copy):
    workspace, env = retrained_copy["workspace"], retrained_copy["env"]
    checkpoint = workspace / "build" / "model" / "checkpoint.pt"
    model = (workspace / "build" / "model" / "model.pt").read_bytes()
    trainer = subprocess.Popen([sys.executable, "-m", "pipeline", "train"], cwd=workspace, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not checkpoint.exists() and trainer.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    trainer.send_signal(signal.SIGKILL)  # killed mid-run: the checkpoint stays, model.pt is the flow's
    trainer.wait()
    assert checkpoint.exists() and (workspace / "build" / "model" / "model.pt").read_bytes() == model

    flow = run([sys.executable, "-m", "flows", "retrain", "--root", str(workspace)], workspace, env)
    assert "Running stage 'train'" not in flow.stdout + flow.stderr  # DVC: train is up to date
    assert not checkpoint.exists()
    assert "discarded a stale training checkpoint (DVC skipped or restored the stage: its outputs are current)" in flow.stdout + flow.stderr
