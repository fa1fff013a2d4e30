"""The gate refuses, end to end: a real flow run whose candidate misses a floor leaves `champion`
where it was, and decision.json names the failing rule; the registry's report.png says the same in
its title and is logged to the version's MLflow run.

On this module's copy of the `retrained` workspace (the shared one stays untouched): its flow run
passed the tiny profile's gate (version 1 is champion); here a retrain with more iterations (new
weights) runs under an impossible rain-region floor on the seen suite.
"""

from __future__ import annotations

import copy
import json
import sys

import pytest
import yaml

from PIL import Image

from tests.workspaces import mlflow_client, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMPOSSIBLE = "psnr_rain_gain/seen"


def test_a_candidate_that_fails_the_gate_does_not_move_the_champion(retrained_copy):
    workspace, env = retrained_copy["workspace"], retrained_copy["env"]
    params = copy.deepcopy(retrained_copy["params"])
    flow = [sys.executable, "-m", "flows", "retrain", "--root", str(workspace)]
    first = json.loads((workspace / params["paths"]["registry"] / "decision.json").read_text())
    assert first["promote"] is True and first["champion_version"] == first["version"]

    params["train"]["iterations"] += 10  # different weights: a new candidate
    params["register"]["gates"]["floors"][IMPOSSIBLE] = 1000.0
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "stricter gate"], workspace, env)
    commit = run(["git", "rev-parse", "HEAD"], workspace, env).stdout.strip()  # the code the candidate is trained from
    run(flow, workspace, env)

    decision = json.loads((workspace / params["paths"]["registry"] / "decision.json").read_text())
    assert decision["version"] != first["version"]
    assert decision["promote"] is False
    assert any(reason.startswith(f"FAIL {IMPOSSIBLE}") for reason in decision["reasons"]), decision["reasons"]
    assert decision["champion_version"] == first["version"]
    client = mlflow_client(workspace, env)
    champion = client.get_model_version_by_alias("raincheck-derain", "champion")
    candidate = client.get_model_version_by_alias("raincheck-derain", "candidate")
    aliases = {"champion": str(champion.version), "candidate": str(candidate.version), "gate": candidate.tags.get("gate")}
    assert aliases == {"champion": first["version"], "candidate": decision["version"], "gate": "failed"}

    # build/registry/report.png: the evaluation report titled with version, commit and verdict
    report = workspace / params["paths"]["registry"] / "report.png"
    with Image.open(report) as image, Image.open(workspace / params["paths"]["evaluation"] / "report.png") as evaluation:
        title = image.text["Title"]
        assert image.height > evaluation.height and image.width == evaluation.width
    assert title.startswith(f"raincheck-derain v{decision['version']} (candidate, not promoted) · commit {commit[:8]}"), title
    assert f" · gate FAIL: {IMPOSSIBLE} = " in title, title
    artifacts = [a.path for a in client.list_artifacts(decision["run_id"], "reports/registry")]
    assert "reports/registry/report.png" in artifacts and "reports/registry/decision.json" in artifacts
