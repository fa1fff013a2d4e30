"""The registry never lies: real flow on a tiny workspace, real `raincheck register` on SQLite.

The module works on its own copy of the shared retrained workspace (one flow run); each test then
points MLFLOW_TRACKING_URI at its own fresh SQLite registry, so the cases (crash, concurrency,
history, typos) do not share registry state.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspaces import alias_number, mlflow_client, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "raincheck-derain"


@pytest.fixture(scope="module")
def built(retrained_copy, tmp_path_factory) -> dict:
    """This module's copy of the workspace after one flow run (version 1 registered)."""
    return {**retrained_copy, "base": tmp_path_factory.mktemp("lifecycle")}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fresh_registry(built: dict, name: str) -> dict:
    """The workspace's env with its own empty SQLite registry."""
    return {**built["env"], "MLFLOW_TRACKING_URI": f"sqlite:///{built['base'] / name}.db"}


def register(workspace: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "pipeline", "register"], cwd=workspace, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def registry_state(workspace: Path, env: dict) -> dict:
    """The registry's versions (number and tags, in order) and the two aliases, read in this process."""
    client = mlflow_client(workspace, env)
    versions = sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version))
    return {"versions": [{"version": str(v.version), "tags": v.tags} for v in versions],
            "candidate": alias_number(client, "candidate", MODEL), "champion": alias_number(client, "champion", MODEL)}


def test_candidate_alias_holds_the_workspace_model(built):
    workspace, env, params = built["workspace"], built["env"], built["params"]
    state = registry_state(workspace, env)
    candidate = next(v for v in state["versions"] if v["version"] == state["candidate"])
    assert candidate["tags"]["model_sha256"] == sha256(workspace / params["paths"]["model"] / "model.pt")
    assert candidate["tags"]["raincheck.state"] == "aliased"
    assert len(candidate["tags"]["code_digest"]) == 64


def test_committing_results_gives_no_new_version(built):
    workspace, env = built["workspace"], built["env"]
    run(["git", "add", "-A"], workspace, env)
    run(["git", "commit", "-q", "--allow-empty", "-m", "results"], workspace, env)
    out = register(workspace, env).stdout
    assert '"status": "reproduced"' in out and '"version": "1"' in out
    assert len(registry_state(workspace, env)["versions"]) == 1


@pytest.mark.parametrize("crash_after", ["created", "evaluated", "gated"])
def test_crash_then_rerun_gives_one_gated_version_and_a_champion(built, crash_after):
    workspace = built["workspace"]
    env = fresh_registry(built, f"crash-{crash_after}")
    crashed = register(workspace, {**env, "RAINCHECK_FAULT_AFTER_STATE": crash_after}, check=False)
    assert crashed.returncode != 0 and "fault injected" in crashed.stderr
    half = registry_state(workspace, env)
    assert [v["tags"]["raincheck.state"] for v in half["versions"]] == [crash_after]
    assert half["champion"] is None
    out = register(workspace, env).stdout
    assert '"status": "resumed"' in out
    done = registry_state(workspace, env)
    assert len(done["versions"]) == 1
    assert done["versions"][0]["tags"]["raincheck.state"] == "aliased"
    assert done["versions"][0]["tags"]["gate"] == "passed"
    assert done["champion"] == done["candidate"] == "1"


def test_two_concurrent_registrations_give_one_version(built):
    workspace = built["workspace"]
    env = fresh_registry(built, "concurrent")
    command = [sys.executable, "-m", "pipeline", "register"]
    processes = [subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    statuses = sorted(json.loads(out[out.index("{"):])["status"] for out, _ in outputs)
    assert statuses == ["created", "reproduced"]
    assert len(registry_state(workspace, env)["versions"]) == 1


def _edit_gates(workspace: Path, gates) -> str:
    original = (workspace / "params.yaml").read_text()
    raw = yaml.safe_load(original)
    if gates is None:
        del raw["register"]["gates"]
    else:
        raw["register"]["gates"] = gates
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return original


@pytest.mark.parametrize("gates, message", [
    ({"champion_tolerance": {"psnr_rain/unsen": 0.5}}, "register.gates.champion_tolerance.psnr_rain/unsen: the candidate has no metric"),
    (None, "register.gates: Field required"),
])
def test_typo_or_missing_gates_stop_registration_naming_the_key(built, gates, message):
    workspace = built["workspace"]
    env = fresh_registry(built, f"gates-{gates is None}")
    original = _edit_gates(workspace, gates)
    try:
        result = register(workspace, env, check=False)
    finally:
        (workspace / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert message in result.stderr
    assert registry_state(workspace, env)["versions"] == []  # nothing half-made


def test_gates_none_registers_with_a_warning(built):
    workspace = built["workspace"]
    env = fresh_registry(built, "gates-none")
    original = _edit_gates(workspace, "none")
    try:
        out = register(workspace, env).stdout
    finally:
        (workspace / "params.yaml").write_text(original)
    assert "promoted without a gate" in out and '"gate": "none"' in out


def test_three_promotions_then_three_rollbacks_walk_the_history_back(built):
    workspace, params = built["workspace"], built["params"]
    env = fresh_registry(built, "history")
    model = workspace / params["paths"]["model"] / "model.pt"
    original = model.read_bytes()
    try:
        register(workspace, env)  # version 1, champion by the gate
        for i in range(3):  # versions 2-4 with other weights (bytes appended: a new file digest), each crowned by the gate
            model.write_bytes(original + bytes([i + 1]) * 16)
            register(workspace, env)
    finally:
        model.write_bytes(original)
    cli = [sys.executable, "-m", "pipeline", "registry"]
    assert registry_state(workspace, env)["champion"] == "4"
    for version in ("1", "2", "3"):  # history: gate 1, 2, 3, 4, then promote 1, 2, 3
        run([*cli, "promote", version, "--reason", f"try {version}"], workspace, env)
    assert registry_state(workspace, env)["champion"] == "3"
    for expected in ("2", "1", "4"):  # each rollback undoes one change, no ping-pong
        out = run([*cli, "rollback"], workspace, env).stdout
        assert f"-> {expected} (rolled back)" in out
        assert registry_state(workspace, env)["champion"] == expected
    shown = run([*cli, "history"], workspace, env).stdout
    actions = [line.split()[2] for line in shown.splitlines()[2:] if line[:1].isdigit()]
    assert actions == ["gate"] * 4 + ["promote"] * 3 + ["rollback"] * 3 and "champion now: 4; `raincheck registry rollback` would return to: 3" in shown


def test_retrain_with_other_params_is_refused(built):
    workspace, env = built["workspace"], built["env"]
    (workspace / "other.yaml").write_text((workspace / "params.yaml").read_text())
    result = subprocess.run([sys.executable, "-m", "flows", "retrain", "--params", "other.yaml"], cwd=workspace, env=env,
                            capture_output=True, text=True, timeout=300)
    (workspace / "other.yaml").unlink()
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--params other.yaml" in result.stderr


def test_uncommitted_code_change_gives_a_new_gated_version(built):
    """Last: it retrains. The candidate must then be the new weights, gated."""
    workspace, env, params = built["workspace"], built["env"], built["params"]
    train = workspace / "pipeline" / "training" / "train.py"
    source = train.read_text()
    assert "EMA_WARMUP_POWER = 2 / 3" in source
    train.write_text(source.replace("EMA_WARMUP_POWER = 2 / 3", "EMA_WARMUP_POWER = 1 / 2"))  # other weights
    before = registry_state(workspace, env)
    out = run([sys.executable, "-m", "flows", "retrain"], workspace, env).stdout
    after = registry_state(workspace, env)
    model_sha = sha256(workspace / params["paths"]["model"] / "model.pt")
    candidate = next(v for v in after["versions"] if v["version"] == after["candidate"])
    assert candidate["tags"]["model_sha256"] == model_sha
    assert candidate["tags"]["raincheck.state"] == "aliased" and candidate["tags"]["gate"] in {"passed", "failed"}
    assert candidate["tags"]["git_dirty"] == "true"
    old_digest = before["versions"][0]["tags"]["code_digest"]
    assert candidate["tags"]["code_digest"] != old_digest
    assert model_sha != before["versions"][0]["tags"]["model_sha256"]
    assert len(after["versions"]) == len(before["versions"]) + 1, out[-2000:]
    assert "(new version)" in out
