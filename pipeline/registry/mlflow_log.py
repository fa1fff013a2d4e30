"""Logging to MLflow: the runs behind the prior's and the deraining model's versions.

One MLflow run per registered version, holding the params, the evaluation metrics, the training
curves, the reports and the pyfunc model.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.io import read_csv, read_json
from pipeline.registry.client import CURRENT, ensure_experiment, find_version

# What the served model needs; explicit so logging never runs a pip resolution (offline-safe).
PIP_REQUIREMENTS = ["torch>=2.4", "timm>=1.0", "numpy>=2", "pillow", "pandas", "pydantic>=2", "pyyaml"]
DIFFUSERS_REQUIREMENT = "diffusers>=0.30,<1"  # rebuilds a pretrained_autoencoder prior's architecture


def _flatten(prefix: str, obj: object) -> dict[str, str]:
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(_flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: str(obj)[:500]}


def _log_curves(mlflow, log_csv: Path, prefix: str) -> None:
    """Log a training log.csv (column `step` + numeric columns) as step-wise metrics."""
    if not log_csv.is_file():
        return
    for row in read_csv(log_csv):
        step = int(float(row.pop("step")))
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if number == number:  # skip NaN
                mlflow.log_metric(f"{prefix}/{key}", number, step=step)


def report_files(params: Params, root: Path) -> list[tuple[Path, str]]:
    """(file, artifact folder) for the derain run: one folder per stage, so the evaluation's and
    the curation's `report.png` never overwrite each other."""
    paths = params.paths
    return [
        (root / paths.evaluation / "report.png", "reports/evaluation"),
        (root / paths.evaluation / "per_image.csv", "reports/evaluation"),
        (root / paths.curated / "report.png", "reports/curation"),
        (root / paths.curated / "summary.json", "reports/curation"),
        (root / paths.curated / "checks.json", "reports/curation"),
        (root / paths.suites / "gallery.png", "reports/suites"),
        (root / "params.yaml", "reports"),
        (root / "dvc.lock", "reports"),
    ]


def numeric(metrics: dict) -> dict[str, float]:
    """The finite numbers of a metrics dict, as floats (MLflow takes no NaN, bool or text)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def pip_requirements(params: Params) -> list[str]:
    """What the served models need: diffusers too when the prior is a pretrained diffusers autoencoder."""
    if params.prior.model.type == "pretrained_autoencoder":
        return [*PIP_REQUIREMENTS, DIFFUSERS_REQUIREMENT]
    return list(PIP_REQUIREMENTS)


def prior_tags(tags: dict[str, str]) -> dict[str, str]:
    """The lineage tags as they apply to the prior: its own checkpoint digest as `model_sha256`,
    and no deraining-model lineage key (that one names the deraining model's inputs)."""
    own = {k: v for k, v in tags.items() if k not in ("model_sha256", "lineage_key")}
    return {**own, "model_sha256": tags["prior_sha256"]}


def register_prior(client, params: Params, root: Path, tags: dict[str, str]) -> str:
    """Register the prior as its own model (idempotent on its checkpoint digest); returns its version."""
    import mlflow

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, PriorPyfunc, signature

    existing = find_version(client, params.register.prior_name, "prior_sha256", tags["prior_sha256"])
    if existing is not None:
        return existing.version
    prior_dir = root / params.paths.prior
    with mlflow.start_run(experiment_id=ensure_experiment(client), run_name=f"prior {params.prior.model.type} @{tags.get('git_commit', 'none')[:8]}") as run:
        mlflow.set_tags({**prior_tags(tags), "raincheck.kind": "prior"})
        mlflow.log_params(_flatten("prior", params.prior.model_dump(mode="json")))
        metrics = prior_dir / "metrics.json"
        if metrics.is_file():
            mlflow.log_metrics(numeric(read_json(metrics)))
        _log_curves(mlflow, prior_dir / "log.csv", "prior")
        if (prior_dir / "recon.png").is_file():
            mlflow.log_artifact(str(prior_dir / "recon.png"), artifact_path="reports")
        info = mlflow.pyfunc.log_model(
            name="prior",
            python_model=PriorPyfunc(),
            artifacts={CHECKPOINT_ARTIFACT: str(prior_dir / "prior.pt")},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature(),
            pip_requirements=pip_requirements(params),
        )
    version = mlflow.register_model(info.model_uri, params.register.prior_name, tags={**prior_tags(tags), "mlflow_run_id": run.info.run_id})
    client.set_registered_model_alias(params.register.prior_name, CURRENT, version.version)
    return version.version


def log_derain_run(client, params: Params, root: Path, tags: dict[str, str], metrics: dict[str, float]) -> tuple[str, str]:
    """One MLflow run with everything about this model; returns (run id, logged model URI)."""
    import mlflow

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc, signature

    paths = params.paths
    with mlflow.start_run(experiment_id=ensure_experiment(client), run_name=f"derain {params.train.model.type} @{tags.get('git_commit', 'none')[:8]}") as run:
        mlflow.set_tags({**tags, "raincheck.kind": "derain"})
        mlflow.log_params(_flatten("", params.model_dump(mode="json", exclude={"register"})))
        mlflow.log_metrics(metrics)
        train_metrics = root / paths.model / "metrics.json"
        if train_metrics.is_file():
            mlflow.log_metrics({f"train/{k}": v for k, v in numeric(read_json(train_metrics)).items()})
        _log_curves(mlflow, root / paths.model / "log.csv", "train")
        for path, folder in report_files(params, root):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=folder)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=DerainPyfunc(tile=params.evaluate.tile, overlap=params.evaluate.overlap),
            artifacts={CHECKPOINT_ARTIFACT: str(root / paths.model / "model.pt")},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature(),
            pip_requirements=pip_requirements(params),
        )
        return run.info.run_id, info.model_uri
