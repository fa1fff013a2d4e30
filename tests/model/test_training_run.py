"""The training run in MLflow is a training run: opened when training starts, curves logged live,
reused by the registration (which adds the datasets, the reports and a model logged from code).
Real training on a tiny workspace, real MLflow on SQLite."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from pipeline.config import load_params, parse_params
from tests.model.test_training import build_workspace, tiny_raw

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("section", ["prior", "train"])
def test_default_params_give_curves_of_more_than_20_points(section):
    params = load_params(ROOT / "params.yaml")
    settings = getattr(params, section)
    assert settings.iterations // settings.val_every > 20


def test_bookkeeping_goes_to_params_not_metrics():
    from pipeline.training.live_log import split_training_metrics

    scores, bookkeeping = split_training_metrics({"psnr_rain/val": 20.5, "final_loss": 0.3, "recon_psnr": 25.0, "iterations": 1500,
                                                  "seconds_validation": 3.2, "n_images/seen": 40, "val_patches": 12, "psnr/x": float("nan")})
    assert scores == {"psnr_rain/val": 20.5, "final_loss": 0.3, "recon_psnr": 25.0}
    assert bookkeeping == {"iterations": "1500", "seconds_validation": "3.2", "n_images/seen": "40", "val_patches": "12"}


@pytest.mark.integration
def test_live_training_runs_are_reused_by_the_registration(tmp_path, monkeypatch, capfd):
    import mlflow

    from pipeline.tracking import mlflow_client
    from pipeline.registry.mlflow_log import log_derain_run, register_prior
    from pipeline.serving.pyfunc import input_example
    from pipeline.training.prior import run_prior
    from pipeline.training.train import run_train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("RAINCHECK_MLFLOW_ARTIFACTS", str(tmp_path / "art"))
    raw = tiny_raw(iterations=44, val_every=2)
    raw["prior"].update(iterations=42, val_every=2)
    root = build_workspace(tmp_path / "ws", parse_params(raw))
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    pool = root / params.paths.pool
    pool.mkdir(parents=True)
    (pool / "manifest.csv").write_text("image_id,sha256\na,00\nb,11\n")
    (root / params.paths.suites / "val" / "manifest.csv").write_text("image_id,seed\nimg0,100\nimg1,101\n")

    run_prior(params, root, show_progress=False)
    run_train(params, root, show_progress=False)
    client = mlflow_client()
    runs = {r.data.tags["raincheck.kind"]: r for r in client.search_runs([client.get_experiment_by_name("raincheck").experiment_id])}
    assert set(runs) == {"prior", "derain"}
    derain, prior = runs["derain"], runs["prior"]
    loss = client.get_metric_history(derain.info.run_id, "train/loss")
    assert len(loss) == 22 and [m.step for m in loss] == list(range(2, 45, 2))
    assert len(client.get_metric_history(derain.info.run_id, "train/psnr_rain/val")) == 22
    assert len(client.get_metric_history(prior.info.run_id, "prior/val_recon_psnr")) == 21
    assert derain.info.status == "FINISHED" and derain.info.end_time > derain.info.start_time
    assert derain.data.params["train_run.iterations"] == "44" and "train/iterations" not in derain.data.metrics
    assert "train/seconds" not in derain.data.metrics and float(derain.data.params["train_run.seconds"]) > 0

    capfd.readouterr()
    model_sha = hashlib.sha256((root / params.paths.model / "model.pt").read_bytes()).hexdigest()
    prior_sha = hashlib.sha256((root / params.paths.prior / "prior.pt").read_bytes()).hexdigest()
    tags = {"model_sha256": model_sha, "prior_sha256": prior_sha, "git_commit": "0123456789abcdef"}
    register_prior(client, params, root, tags)
    run_id, model_uri = log_derain_run(client, params, root, tags, {"psnr/val": 30.0, "n_images/val": 2})
    logged = capfd.readouterr()
    assert run_id == derain.info.run_id  # the registration adds to the training run
    assert client.get_model_version(params.register.prior_name, "1").run_id == prior.info.run_id
    assert len(client.get_metric_history(run_id, "train/loss")) == 22  # not logged twice
    run = client.get_run(run_id)
    assert run.data.params["evaluate_run.n_images/val"] == "2" and "n_images/val" not in run.data.metrics
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"pool", "suite/val"}
    pool_digest = hashlib.sha256((pool / "manifest.csv").read_bytes()).hexdigest()[:16]
    assert {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}["pool"] == pool_digest

    warned = [line for line in (logged.out + logged.err).splitlines() if "WARN" in line.upper()]
    assert not [w for w in warned if "pickle" in w.lower() or "input" in w.lower() or "signature" in w.lower()], warned
    info = mlflow.models.get_model_info(model_uri)
    assert info.saved_input_example_info is not None
    assert info.flavors["python_function"]["model_code_path"].endswith("derain_model.py")  # from code, not pickled
    requirements = Path(mlflow.pyfunc.get_model_dependencies(model_uri)).read_text()
    assert "torch==" in requirements and "numpy==" in requirements
    loaded = mlflow.pyfunc.load_model(model_uri)  # from code, in this process
    out = loaded.predict(input_example())
    assert list(out.columns) == ["image", "error"] and out["image"][0] and out["error"].isna().all()
