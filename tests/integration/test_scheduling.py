"""Scheduled retraining for real: a Prefect server on loopback started by `python -m flows serve`,
the cron deployment served from params.yaml, triggered runs of the tiny pipeline, safe re-runs."""

from __future__ import annotations

import json
import socket
import sys
import textwrap

import pytest
import yaml

from tests.workspaces import alias_number, make_workspace, mlflow_client, run, write_photos

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEPLOYMENT = "retrain/scheduled-retrain"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("sched")
    workspace, env, params = make_workspace(base)
    port = _free_port()
    run([sys.executable, "-m", "flows", "serve", "--root", str(workspace), "--port", str(port)], workspace, env, timeout=300)
    api_env = {**env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    try:
        yield {"workspace": workspace, "env": api_env, "base": base, "params": params}
    finally:
        run([sys.executable, "-m", "flows", "stop", "--root", str(workspace)], workspace, env)


def _prefect(served, body: str) -> dict:
    """Run Python against the test's Prefect server; the body prints one JSON line."""
    script = "import json\nfrom prefect import get_client\nfrom prefect.deployments import run_deployment\n" + textwrap.dedent(body)
    out = run([sys.executable, "-c", script], served["workspace"], served["env"], timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])


def _trigger(served, parameters: dict | None = None) -> dict:
    return _prefect(served, f"""
        fr = run_deployment({DEPLOYMENT!r}, parameters={parameters or {}!r}, timeout=900)
        print(json.dumps({{"state": fr.state.type.value, "message": fr.state.message or ""}}))
    """)


def _versions(served) -> list[str]:
    client = mlflow_client(served["workspace"], served["env"])
    return [str(v.version) for v in client.search_model_versions("name='raincheck-derain'")]


def _champion(served) -> str | None:
    return alias_number(mlflow_client(served["workspace"], served["env"]), "champion")


def _latest_summary(served) -> str:
    return _prefect(served, """
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
        from prefect.client.schemas.sorting import ArtifactSort
        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retrain-summary"])), sort=ArtifactSort.CREATED_DESC, limit=1)
        print(json.dumps({"markdown": arts[0].data if arts else ""}))
    """)["markdown"]


def test_cron_deployment_has_scheduled_runs(served):
    # The server's scheduler service fills in upcoming runs on its own loop (every 60 s by
    # default), so a freshly served deployment may have none yet: poll for up to three loops.
    result = _prefect(served, f"""
        import time
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name({DEPLOYMENT!r})
            for _ in range(90):
                runs = client.read_flow_runs(limit=50)
                scheduled = [r for r in runs if r.deployment_id == deployment.id and r.state and r.state.type.value == "SCHEDULED"]
                if scheduled:
                    break
                time.sleep(2)
        print(json.dumps({{"cron": deployment.schedules[0].schedule.cron, "scheduled": len(scheduled)}}))
    """)
    assert result["cron"] == served["params"]["schedule"]["cron"]
    assert result["scheduled"] >= 1


def test_triggered_run_completes_and_registers(served):
    result = _trigger(served)
    assert result["state"] == "COMPLETED", result["message"]
    assert _versions(served) == ["1"]
    summary = _latest_summary(served)
    assert "stages run: curate, synthesize, prior, train, evaluate" in summary


def test_unchanged_rerun_skips_stages_and_registers_nothing(served):
    result = _trigger(served)
    assert result["state"] == "COMPLETED", result["message"]
    assert _versions(served) == ["1"]
    assert "stages run: none" in _latest_summary(served)


def test_two_concurrent_triggers_do_not_collide(served):
    result = _prefect(served, f"""
        import time
        a = run_deployment({DEPLOYMENT!r}, timeout=0)
        b = run_deployment({DEPLOYMENT!r}, timeout=0)
        terminal = {{}}
        with get_client(sync_client=True) as client:
            for _ in range(600):
                states = {{str(i): client.read_flow_run(i).state for i in (a.id, b.id)}}
                if all(s.is_final() for s in states.values()):
                    break
                time.sleep(1)
        print(json.dumps([[s.type.value, s.message or ""] for s in states.values()]))
    """)
    assert all(state in {"COMPLETED", "FAILED"} for state, _ in result), result
    assert any(state == "COMPLETED" for state, _ in result), result
    for state, message in result:
        if state == "FAILED":
            assert "another raincheck run holds" in message
    assert _versions(served) == ["1"]
    status = run([sys.executable, "-m", "dvc", "status"], served["workspace"], served["env"]).stdout
    assert "changed" not in status, status


def test_broken_source_fails_readably_and_keeps_champion(served):
    workspace, base = served["workspace"], served["base"]
    champion_before, versions_before = _champion(served), _versions(served)
    broken = base / "broken"
    broken.mkdir()
    for i in range(3):
        (broken / f"bad{i}.jpg").write_bytes(b"not an image")
    write_photos(base / "few", 1, seed=99)
    params = dict(served["params"])
    params["ingest"] = {**params["ingest"], "sources": [{"type": "folder", "path": str(broken)}, {"type": "folder", "path": str(base / "few")}]}
    # The stages read params.yaml only (another --params file is refused), so the broken sources go there.
    original = (workspace / "params.yaml").read_text()
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        result = _trigger(served, {"refresh_pool_first": True})
    finally:
        (workspace / "params.yaml").write_text(original)
    assert result["state"] == "FAILED"
    assert "ingest failed" in result["message"]
    assert _champion(served) == champion_before
    assert _versions(served) == versions_before  # the failed run registered nothing
