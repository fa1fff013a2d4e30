"""Register the prior and the deraining model in MLflow, with lineage, and apply the gate.

One MLflow run per registered version, holding the params, the evaluation metrics, the training
curves, the reports and the pyfunc model. Registration is idempotent: a version whose lineage key
(code + data + params) already exists is returned instead of duplicated. The `champion` alias
moves only when the gate in params.register.gates passes; every version gets `candidate`.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import Params
from pipeline.io import read_csv, read_json, write_json
from pipeline.registry.lineage import lineage_tags
from pipeline.registry.promotion import decide

EXPERIMENT = "raincheck"
CANDIDATE, CHAMPION, CURRENT = "candidate", "champion", "current"
# What the served model needs; explicit so logging never runs a pip resolution (offline-safe).
PIP_REQUIREMENTS = ["torch>=2.4", "timm>=1.0", "numpy>=2", "pillow", "pandas", "pydantic>=2", "pyyaml"]
DIFFUSERS_REQUIREMENT = "diffusers>=0.30,<1"  # rebuilds a pretrained_autoencoder prior's architecture


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says why."""


def mlflow_client():
    """An MlflowClient on MLFLOW_TRACKING_URI (SQLite by default, see pipeline.runtime)."""
    import mlflow

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryError("MLFLOW_TRACKING_URI is not set (pipeline.runtime.project_environment sets a default)")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client, name: str = EXPERIMENT) -> str:
    """The experiment id, creating it with an explicit artifact location if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = Path(os.environ.get("RAINCHECK_MLFLOW_ARTIFACTS", ".raincheck/mlartifacts")).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.as_uri())


def find_version(client, model_name: str, tag: str, value: str):
    """The newest registered version of `model_name` whose tag `tag` equals `value`, or None."""
    versions = [v for v in client.search_model_versions(f"name='{model_name}'") if v.tags.get(tag) == value]
    return max(versions, key=lambda v: int(v.version)) if versions else None


def alias_version(client, model_name: str, alias: str):
    """The version an alias points at, or None (first run, or no such registered model)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def version_metrics(client, version) -> dict[str, float]:
    """The metrics of the MLflow run a registered version came from (empty if unknown)."""
    run_id = version.run_id or version.tags.get("mlflow_run_id")
    return dict(client.get_run(run_id).data.metrics) if run_id else {}


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


def _numeric(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def pip_requirements(params: Params) -> list[str]:
    """What the served models need: diffusers too when the prior is a pretrained diffusers autoencoder."""
    if params.prior.model.type == "pretrained_autoencoder":
        return [*PIP_REQUIREMENTS, DIFFUSERS_REQUIREMENT]
    return list(PIP_REQUIREMENTS)


def register_prior(client, params: Params, root: Path, tags: dict[str, str]) -> str:
    """Register the prior as its own model (idempotent on its checkpoint digest); returns its version."""
    import mlflow

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, PriorPyfunc, signature

    existing = find_version(client, params.register.prior_name, "prior_sha256", tags["prior_sha256"])
    if existing is not None:
        return existing.version
    prior_dir = root / params.paths.prior
    with mlflow.start_run(experiment_id=ensure_experiment(client), run_name="prior") as run:
        mlflow.set_tags({**tags, "raincheck.kind": "prior"})
        mlflow.log_params(_flatten("prior", params.prior.model_dump(mode="json")))
        metrics = prior_dir / "metrics.json"
        if metrics.is_file():
            mlflow.log_metrics(_numeric(read_json(metrics)))
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
    version = mlflow.register_model(info.model_uri, params.register.prior_name, tags={**tags, "mlflow_run_id": run.info.run_id})
    client.set_registered_model_alias(params.register.prior_name, CURRENT, version.version)
    return version.version


def _log_derain_run(client, params: Params, root: Path, tags: dict[str, str], metrics: dict[str, float]) -> tuple[str, str]:
    """One MLflow run with everything about this model; returns (run id, logged model URI)."""
    import mlflow

    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc, signature

    paths = params.paths
    with mlflow.start_run(experiment_id=ensure_experiment(client), run_name="derain") as run:
        mlflow.set_tags({**tags, "raincheck.kind": "derain"})
        mlflow.log_params(_flatten("", params.model_dump(mode="json", exclude={"register"})))
        mlflow.log_metrics(metrics)
        train_metrics = root / paths.model / "metrics.json"
        if train_metrics.is_file():
            mlflow.log_metrics({f"train/{k}": v for k, v in _numeric(read_json(train_metrics)).items()})
        _log_curves(mlflow, root / paths.model / "log.csv", "train")
        for path in (
            root / paths.evaluation / "report.png",
            root / paths.evaluation / "per_image.csv",
            root / paths.curated / "report.png",
            root / paths.curated / "summary.json",
            root / paths.curated / "checks.json",
            root / paths.suites / "gallery.png",
            root / "params.yaml",
            root / "dvc.lock",
        ):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="reports")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=DerainPyfunc(tile=params.evaluate.tile, overlap=params.evaluate.overlap),
            artifacts={CHECKPOINT_ARTIFACT: str(root / paths.model / "model.pt")},
            code_paths=[str(Path(__file__).resolve().parents[1])],
            signature=signature(),
            pip_requirements=pip_requirements(params),
        )
        return run.info.run_id, info.model_uri


def run_register(params: Params, root: Path, flow_run_id: str | None = None) -> dict:
    """Register prior + deraining model, apply the gate, move aliases; returns the decision.

    Writes `{paths.registry}/decision.json` (the gate decision and its reasons).
    """
    import mlflow

    root = Path(root)
    metrics_file = root / params.paths.evaluation / "metrics.json"
    if not metrics_file.is_file():
        raise RegistryError(f"{metrics_file} is missing: run the evaluate step first")
    metrics = _numeric(read_json(metrics_file))
    client = mlflow_client()
    tags = lineage_tags(params, root, flow_run_id)
    name = params.register.model_name

    existing = find_version(client, name, "lineage_key", tags["lineage_key"])
    if existing is not None:
        result = {
            "model_name": name,
            "version": str(existing.version),
            "created": False,
            "promote": existing.tags.get("gate") == "passed",
            "reasons": existing.tags.get("gate_reasons", "").split("\n"),
            "note": "same code, data and params as this version: nothing new registered",
        }
    else:
        prior_version = register_prior(client, params, root, tags)
        tags = {**tags, "prior_model": params.register.prior_name, "prior_version": str(prior_version)}
        run_id, model_uri = _log_derain_run(client, params, root, tags, metrics)
        version = mlflow.register_model(model_uri, name, tags={**tags, "mlflow_run_id": run_id})
        client.set_registered_model_alias(name, CANDIDATE, version.version)

        champion = alias_version(client, name, CHAMPION)
        champion_metrics = version_metrics(client, champion) if champion else None
        decision = decide(metrics, champion_metrics, params.register.gates.floors, params.register.gates.champion_tolerance)
        client.set_model_version_tag(name, version.version, "gate", "passed" if decision.promote else "failed")
        client.set_model_version_tag(name, version.version, "gate_reasons", "\n".join(decision.reasons))
        if decision.promote:
            if champion is not None:
                client.set_model_version_tag(name, version.version, "previous_champion", str(champion.version))
            client.set_registered_model_alias(name, CHAMPION, version.version)
        result = {"model_name": name, "version": str(version.version), "created": True, "run_id": run_id,
                  "prior_version": str(prior_version), "previous_champion": str(champion.version) if champion else None,
                  "champion_metrics": dict(champion_metrics or {}), **decision.as_dict()}

    champion = alias_version(client, name, CHAMPION)
    result["champion_version"] = str(champion.version) if champion else None
    result["aliases"] = sorted(alias for alias in (CANDIDATE, CHAMPION) if (v := alias_version(client, name, alias)) and str(v.version) == result["version"])
    result["tracking_uri"] = os.environ.get("MLFLOW_TRACKING_URI")
    write_json(root / params.paths.registry / "decision.json", result)
    return result
