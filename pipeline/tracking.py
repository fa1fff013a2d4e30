"""MLflow as raincheck talks to it: the client, the experiment, version lookups, the registry lock.

A foundation module (README "Layout": the import arrows): training logs its live run through it,
`raincheck predict` resolves versions with it, the study opens its experiment with it, and the
registry package builds on it. It imports nothing from raincheck but pipeline.runtime. Nothing
here decides anything; pipeline/registry/ (register.py, the state machine; history.py;
commands.py) does.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from pipeline.runtime import held_lock, state_path

EXPERIMENT = "raincheck"
CANDIDATE, CHAMPION, CURRENT = "candidate", "champion", "current"
STATE_TAG = "raincheck.state"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# The registration states, in order: a version walks them one by one (register.py).
STATES = ("created", "evaluated", "gated", "aliased")
LOCK_TIMEOUT_S = 600.0  # a registration takes seconds; a lock held this long is a stuck process


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


@contextlib.contextmanager
def registry_lock(root: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold `.raincheck/registry.lock`: registrations, promotions and rollbacks from this
    workspace run one at a time, so two concurrent `raincheck register` mint one version.

    (A registry shared by several machines needs the lock on shared storage: set
    RAINCHECK_REGISTRY_LOCK to a path there.)
    """
    path = Path(os.environ.get("RAINCHECK_REGISTRY_LOCK") or state_path(root, "registry.lock"))
    with held_lock(path, timeout, lambda path: RegistryError(
            f"another registration has held {path} for {timeout:g} s; is a raincheck process stuck?")):
        yield


def ensure_experiment(client, name: str = EXPERIMENT) -> str:
    """The experiment id, creating it with an explicit artifact location if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifacts = Path(os.environ.get("RAINCHECK_MLFLOW_ARTIFACTS") or state_path(".", "mlartifacts")).resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        experiment_id = client.create_experiment(name, artifact_location=artifacts.as_uri())
    else:
        experiment_id = experiment.experiment_id
    if (experiment.tags if experiment is not None else {}).get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        # Without it MLflow 3 opens the experiment on an empty GenAI traces page instead of its runs.
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def model_versions(client, model_name: str) -> list:
    """Every version of `model_name`, oldest first (empty when the model does not exist yet)."""
    return sorted(client.search_model_versions(f"name='{model_name}'"), key=lambda v: int(v.version))


def find_version(client, model_name: str, tag: str, value: str):
    """The oldest registered version of `model_name` whose tag `tag` equals `value`, or None.

    Oldest: if an older raincheck minted duplicates, the first one is the one people know.
    """
    return next((v for v in model_versions(client, model_name) if v.tags.get(tag) == value), None)


def version_state(version) -> str:
    """Where a version is in created -> evaluated -> gated -> aliased.

    Versions registered before the state tag existed count as aliased once they carry a gate
    result, and as created otherwise (the half-registered case the state machine finishes).
    """
    state = version.tags.get(STATE_TAG)
    if state in STATES:
        return state
    return "aliased" if version.tags.get("gate") in {"passed", "failed"} else "created"


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


def resolve_version(client, model_name: str, version: str | None, default_alias: str = CHAMPION):
    """The version a user named (a number, an alias, or None for `default_alias`); RegistryError
    naming what exists when there is no such version or alias."""
    numbers = [str(v.version) for v in model_versions(client, model_name)]
    if not numbers:
        raise RegistryError(f"{model_name}: no versions registered yet (run `make run` first)")
    wanted = default_alias if version is None else str(version)
    found = None
    if wanted.isdigit():
        found = next((v for v in model_versions(client, model_name) if str(v.version) == wanted), None)
    else:
        found = alias_version(client, model_name, wanted)
    if found is None:
        aliases = [a for a in (CHAMPION, CANDIDATE) if alias_version(client, model_name, a) is not None]
        raise RegistryError(f"{model_name} has no version or alias {wanted!r}; versions: {', '.join(numbers)}; "
                            f"aliases: {', '.join(aliases) or 'none'}")
    return found
