"""What a user finds in MLflow and in the lineage tags: distinct reports, honest git_dirty, the
prior's own identity. Real MLflow on SQLite, real git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_params
from pipeline.lineage import git_commit
from pipeline.registry.mlflow_log import log_derain_run, prior_tags, report_files

ROOT = Path(__file__).resolve().parents[2]


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True, capture_output=True)


def test_git_dirty_ignores_outputs_dvc_rewrites(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "a.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("a: 1\n")
    (tmp_path / "dvc.lock").write_text("old\n")
    (tmp_path / "metrics.json").write_text("{}\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    (tmp_path / "dvc.lock").write_text("new\n")  # what a run rewrites and autostages
    (tmp_path / "metrics.json").write_text('{"psnr": 1}\n')
    _git(tmp_path, "add", "dvc.lock")
    assert git_commit(tmp_path)[1] is False
    (tmp_path / "params.yaml").write_text("a: 2\n")  # what defines the run
    assert git_commit(tmp_path)[1] is True


def test_prior_version_carries_its_own_digest():
    tags = {"model_sha256": "derain", "prior_sha256": "prior", "lineage_key": "k", "git_commit": "c"}
    own = prior_tags(tags)
    assert own["model_sha256"] == "prior" and "lineage_key" not in own and own["git_commit"] == "c"


@pytest.mark.integration
def test_reports_and_decision_are_distinct_artifacts(tmp_path, monkeypatch):
    import mlflow

    params = load_params(ROOT / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAINCHECK_MLFLOW_ARTIFACTS", str(tmp_path / "art"))
    rng = np.random.default_rng(0)
    for path, _ in report_files(params, tmp_path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".png":  # two different images under the same name
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        else:
            path.write_text("x\n")
    from pipeline.tracking import mlflow_client

    (tmp_path / params.paths.model).mkdir(parents=True, exist_ok=True)
    (tmp_path / params.paths.model / "model.pt").write_bytes(b"weights")  # logged as a file, not loaded
    client = mlflow_client()
    run_id, _ = log_derain_run(client, params, tmp_path, {"raincheck.kind": "derain"}, {"psnr/seen": 30.0})
    decision = tmp_path / "decision.json"
    decision.write_text("{}")
    client.log_artifact(run_id, str(decision), artifact_path="reports/registry")  # as run_register does
    listed = {a.path for folder in ("reports/evaluation", "reports/curation", "reports/registry")
              for a in client.list_artifacts(run_id, folder)}
    assert {"reports/evaluation/report.png", "reports/curation/report.png", "reports/registry/decision.json"} <= listed
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="reports", dst_path=str(tmp_path / "dl")))
    assert (local / "evaluation" / "report.png").read_bytes() != (local / "curation" / "report.png").read_bytes()


@pytest.mark.integration
def test_experiment_opens_on_runs_and_run_names_say_what_they_are(tmp_path, monkeypatch):
    from pipeline.tracking import EXPERIMENT, ensure_experiment, mlflow_client

    params = load_params(ROOT / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAINCHECK_MLFLOW_ARTIFACTS", str(tmp_path / "art"))
    (tmp_path / params.paths.model).mkdir(parents=True)
    (tmp_path / params.paths.model / "model.pt").write_bytes(b"weights")
    client = mlflow_client()
    run_id, _ = log_derain_run(client, params, tmp_path, {"git_commit": "0123456789abcdef"}, {})
    assert client.get_experiment_by_name(EXPERIMENT).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_run(run_id).info.run_name == f"derain {params.train.model.type} @01234567"
    assert ensure_experiment(client) == client.get_experiment_by_name(EXPERIMENT).experiment_id  # idempotent


def test_version_description_names_verdict_gains_champion_and_prior():
    from pipeline.registry.register import version_description

    tags = {"gate": "failed", "gate_reasons": "ok   psnr/clean = 40.000 >= floor 35\nFAIL psnr_bg_gain/wind = -11.080 < floor 0",
            "gate_champion": "3", "prior_model": "raincheck-prior", "prior_version": "2"}
    text = version_description(tags, {"psnr_rain_gain/unseen": 4.25, "psnr/clean": 40.0, "psnr_bg_gain/unseen": float("nan")})
    assert text.startswith("gate FAILED on psnr_bg_gain/wind.")
    assert "psnr_rain_gain/unseen +4.25" in text and "psnr/clean 40.00" in text and "psnr_bg_gain/unseen" not in text
    assert "champion version 3" in text and "raincheck-prior version 2" in text


@pytest.mark.integration
def test_registration_on_sqlite_leaves_what_a_user_reads(tmp_path, monkeypatch):
    """run_register on a workspace with stand-in files (nothing loads them): the version has its
    description, the run has decision.json, the prior's version its own checkpoint digest."""
    import hashlib
    import json
    import shutil

    from pipeline.tracking import mlflow_client
    from pipeline.registry.register import run_register

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAINCHECK_MLFLOW_ARTIFACTS", str(tmp_path / "art"))
    rules = params.register.rules
    metrics = {key: floor + 1.0 for key, floor in rules.floors.items()} | {key: 30.0 for key in rules.champion_tolerance}
    for folder, name, content in ((params.paths.evaluation, "metrics.json", json.dumps(metrics).encode()),
                                  (params.paths.model, "model.pt", b"derain weights"), (params.paths.prior, "prior.pt", b"prior weights")):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        (tmp_path / folder / name).write_bytes(content)
    result = run_register(params, tmp_path)
    client = mlflow_client()
    version = client.get_model_version(params.register.model_name, result["version"])
    assert version.description.startswith("gate passed.") and "prior raincheck-prior version 1" in version.description
    assert "reports/registry/decision.json" in {a.path for a in client.list_artifacts(result["run_id"], "reports/registry")}
    prior = client.get_model_version(params.register.prior_name, result["prior_version"])
    assert prior.tags["model_sha256"] == hashlib.sha256(b"prior weights").hexdigest()
    assert "lineage_key" not in prior.tags


@pytest.mark.integration
def test_dvc_plots_show_the_chosen_series(tmp_path):
    """`dvc plots show --json` in a real git + DVC repo with this dvc.yaml: the loss, not the last column."""
    import json
    import shutil

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "build" / "model").mkdir(parents=True)
    (tmp_path / "build" / "prior").mkdir(parents=True)
    rows = "\n".join(f"{s},{1 / s},{20 + s / 100},{30 + s / 100},{s % 7}" for s in range(25, 800, 25))
    (tmp_path / "build/model/log.csv").write_text("step,loss,psnr_rain/val,psnr_bg/val,last\n" + rows + "\n")
    (tmp_path / "build/prior/log.csv").write_text("step,loss,val_recon_psnr,val_codebook_usage\n1,1,20,0.5\n2,0.5,22,0.6\n")
    _git(tmp_path, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=tmp_path, check=True, capture_output=True, text=True).stdout
    data = json.loads(out)["data"]

    def y_fields(name: str) -> set:
        content = data[name][0]["content"]
        return {layer["encoding"]["y"]["field"] for layer in content.get("layer", [content]) if "y" in layer.get("encoding", {})}

    assert y_fields("training loss") == {"loss"}
    assert y_fields("prior reconstruction PSNR") == {"val_recon_psnr"}
    assert data["validation PSNR"][0]["content"]["title"]["text"].startswith("Deraining network")


def test_prefect_summary_links_to_mlflow_and_reports(tmp_path):
    from pipeline.reporting import run_markdown

    params = load_params(ROOT / "params.yaml")
    registration = {"model_name": "raincheck-derain", "version": "4", "run_id": "abcdef0123456789", "aliases": [],
                    "reasons": [], "promote": True, "gate": "passed"}
    text = run_markdown({"metrics": {}, "registration": registration}, params, tmp_path)
    assert "[raincheck-derain v4](http://127.0.0.1:5000/#/models/raincheck-derain/versions/4)" in text
    assert "(http://127.0.0.1:5000/#/runs/abcdef0123456789)" in text
    assert f"({(tmp_path / params.paths.evaluation / 'report.png').as_uri()})" in text
    assert f"({(tmp_path / params.paths.registry / 'report.png').as_uri()})" in text  # titled with version and verdict
