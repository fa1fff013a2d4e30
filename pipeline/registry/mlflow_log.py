"""Logging to MLflow: the runs behind the prior's and the deraining model's versions.

One MLflow run per registered version, holding the params, the evaluation metrics, the training
curves, the datasets (mlflow.log_input), the reports and the pyfunc model (models from code,
with an input example and pinned requirements). When training ran with MLflow configured, that run
is the one training opened (pipeline.training.live_log), found by the weights it wrote; the
registration adds to it. Otherwise a run is opened here and log.csv is logged after the fact.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as installed_version
from pathlib import Path

from pipeline import layout
from pipeline.config import Params
from pipeline.io import read_csv, read_json
from pipeline.tracking import CURRENT, ensure_experiment, find_version
from pipeline.training.live_log import find_trained_run, flatten, log_rows, log_summary, split_training_metrics

# What the served model needs. Pinned to the versions installed here (so `mlflow models serve
# --env-manager virtualenv` rebuilds what was tested); explicit, so logging never runs a pip
# resolution (offline-safe). The ranges apply where a package is not installed.
REQUIREMENTS = {"torch": ">=2.4", "timm": ">=1.0", "numpy": ">=2", "pillow": "", "pandas": "", "pydantic": ">=2", "pyyaml": ""}
DIFFUSERS = ("diffusers", ">=0.30,<1")  # rebuilds a pretrained_autoencoder prior's architecture


def _log_curves(mlflow, log_csv: Path, prefix: str) -> None:
    """Log every row of a training log.csv (column `step` + numeric columns) as step-wise metrics."""
    if log_csv.is_file():
        log_rows(mlflow.MlflowClient(), mlflow.active_run().info.run_id, read_csv(log_csv), prefix)


def _log_training(mlflow, folder: Path, prefix: str, live: bool) -> None:
    """The training curves and summary, unless the live training run already holds them."""
    if live:
        return
    _log_curves(mlflow, folder / layout.LOG, prefix)
    if (folder / layout.METRICS).is_file():
        rows = read_csv(folder / layout.LOG) if (folder / layout.LOG).is_file() else []
        step = int(float(rows[-1]["step"])) if rows else 0
        log_summary(mlflow.MlflowClient(), mlflow.active_run().info.run_id, read_json(folder / layout.METRICS), prefix, step,
                    set(rows[-1]) if rows else set())


def _new_params(mlflow, values: dict[str, str]) -> None:
    """Log params the run does not have yet (a reused training run has its own: MLflow refuses
    to change a logged value, and the training's are the ones that made the weights)."""
    have = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    new = {k: v for k, v in values.items() if k not in have}
    if new:
        mlflow.log_params(new)


def log_datasets(mlflow, params: Params, root: Path, suites: list[str], pool_context: str) -> int:
    """mlflow.log_input: the photo pool and each suite, each as a dataset named `pool` /
    `suite/<name>` whose source is its manifest.csv and whose digest is the manifest's sha256
    (first 16 hex), so a metric names the images it was computed on. Returns how many were logged
    (a missing manifest is skipped)."""
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    from pipeline.lineage import file_sha256

    tables = [(root / params.paths.pool / layout.MANIFEST, "pool", pool_context)]
    tables += [(root / params.paths.suites / name / layout.MANIFEST, f"suite/{name}", "evaluation") for name in suites]
    logged = 0
    for path, name, context in tables:
        if not path.is_file():
            continue
        with warnings.catch_warnings():
            # MLflow 3.17 registers its local-file source class twice and warns that a file URI
            # "can be interpreted in multiple ways"; both are the same class.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            source = resolve_dataset_source(path.resolve().as_uri())
        mlflow.log_input(MetaDataset(source, name=name, digest=file_sha256(path)[:16]), context=context)
        logged += 1
    return logged


def report_files(params: Params, root: Path) -> list[tuple[Path, str]]:
    """(file, artifact folder) for the derain run: one folder per stage, so the evaluation's and
    the curation's `report.png` never overwrite each other."""
    paths = params.paths
    return [
        (root / paths.evaluation / layout.REPORT, "reports/evaluation"),
        (root / paths.evaluation / layout.PER_IMAGE, "reports/evaluation"),
        (root / paths.curated / layout.REPORT, "reports/curation"),
        (root / paths.curated / layout.SUMMARY, "reports/curation"),
        (root / paths.curated / layout.CHECKS, "reports/curation"),
        (root / paths.suites / layout.GALLERY, "reports/suites"),
        (root / layout.PARAMS, "reports"),
        (root / layout.DVC_LOCK, "reports"),
    ]


def numeric(metrics: dict) -> dict[str, float]:
    """The finite numbers of a metrics dict, as floats (MLflow takes no NaN, bool or text)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}


def pip_requirements(params: Params) -> list[str]:
    """What the served models need, `name==installed version` (else the range): diffusers too when
    the prior is a pretrained diffusers autoencoder."""
    wanted = [*REQUIREMENTS.items(), *([DIFFUSERS] if params.prior.model.type == "pretrained_autoencoder" else [])]
    out = []
    for name, fallback in wanted:
        try:
            out.append(f"{name}=={installed_version(name)}")
        except PackageNotFoundError:
            out.append(f"{name}{fallback}")
    return out


def prior_tags(tags: dict[str, str]) -> dict[str, str]:
    """The lineage tags as they apply to the prior: its own checkpoint digest as `model_sha256`,
    and no deraining-model lineage key (that one names the deraining model's inputs)."""
    own = {k: v for k, v in tags.items() if k not in ("model_sha256", "lineage_key")}
    return {**own, "model_sha256": tags["prior_sha256"]}


def _run(mlflow, client, kind: str, sha256: str | None, name: str):
    """The live training run that wrote these weights (reopened), else a new run; (context, live)."""
    experiment = ensure_experiment(client)
    trained = find_trained_run(client, experiment, kind, sha256) if sha256 else None
    if trained is not None:
        return mlflow.start_run(run_id=trained), True
    return mlflow.start_run(experiment_id=experiment, run_name=name), False


def _log_model(mlflow, name: str, code: Path, checkpoint: Path, params: Params, config: dict | None = None):
    """The pyfunc from code (no pickle), with its checkpoint, input example and pinned requirements."""
    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, input_example, signature

    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(code),
        model_config=config,
        artifacts={CHECKPOINT_ARTIFACT: str(checkpoint)},
        code_paths=[str(Path(__file__).resolve().parents[1])],
        signature=signature(),
        input_example=input_example(),
        pip_requirements=pip_requirements(params),
    )


def register_prior(client, params: Params, root: Path, tags: dict[str, str]) -> str:
    """Register the prior as its own model, in its own run (idempotent on its checkpoint digest);
    returns its version."""
    import mlflow

    from pipeline.serving.pyfunc import PRIOR_CODE

    existing = find_version(client, params.register.prior_name, "prior_sha256", tags["prior_sha256"])
    if existing is not None:
        return existing.version
    prior_dir = root / params.paths.prior
    context, live = _run(mlflow, client, "prior", tags["prior_sha256"],
                         f"prior {params.prior.model.type} @{tags.get('git_commit', 'none')[:8]}")
    with context as run:
        mlflow.set_tags({**prior_tags(tags), "raincheck.kind": "prior"})
        _new_params(mlflow, flatten("prior", params.prior.model_dump(mode="json")))
        _log_training(mlflow, prior_dir, "prior", live)
        log_datasets(mlflow, params, root, [], "training")
        if (prior_dir / layout.RECON).is_file():
            mlflow.log_artifact(str(prior_dir / layout.RECON), artifact_path="reports")
        info = _log_model(mlflow, "prior", PRIOR_CODE, prior_dir / layout.PRIOR, params)
    version = mlflow.register_model(info.model_uri, params.register.prior_name, tags={**prior_tags(tags), "mlflow_run_id": run.info.run_id})
    client.set_registered_model_alias(params.register.prior_name, CURRENT, version.version)
    return version.version


def log_derain_run(client, params: Params, root: Path, tags: dict[str, str], metrics: dict[str, float]) -> tuple[str, str]:
    """The deraining model's run with everything about it; returns (run id, logged model URI).

    metrics: the evaluation's numbers; scores become metrics, image counts params (`evaluate_run.*`)."""
    import mlflow

    from pipeline.serving.pyfunc import DERAIN_CODE

    paths = params.paths
    context, live = _run(mlflow, client, "derain", tags.get("model_sha256"),
                         f"derain {params.train.model.type} @{tags.get('git_commit', 'none')[:8]}")
    with context as run:
        mlflow.set_tags({**tags, "raincheck.kind": "derain"})
        scores, bookkeeping = split_training_metrics(metrics)
        _new_params(mlflow, {**flatten("", params.model_dump(mode="json", exclude={"register"})),
                             **{f"evaluate_run.{k}": v for k, v in bookkeeping.items()}})
        mlflow.log_metrics(scores)
        _log_training(mlflow, root / paths.model, "train", live)
        log_datasets(mlflow, params, root, [*params.train.val_suites, *params.evaluate.suites], "training")
        for path, folder in report_files(params, root):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path=folder)
        info = _log_model(mlflow, "model", DERAIN_CODE, root / paths.model / layout.MODEL, params,
                          {"tile": params.evaluate.tile, "overlap": params.evaluate.overlap})
        return run.info.run_id, info.model_uri
