"""Live MLflow logging from inside a training step: the training run is opened when training
starts, receives every row of log.csv as step-wise metrics when the row is written, and ends
when training ends (FINISHED, or FAILED on an error), so its duration is the training's.

The registration (pipeline.registry.mlflow_log) later finds this run by the weights it produced
(tag `model_sha256`, set when training finishes) and adds the evaluation metrics, the reports and
the model to it instead of opening a second run. Without a live run (MLFLOW_TRACKING_URI unset,
e.g. run_train called in-process, or a stage restored from DVC's run cache) the registration logs
log.csv after the fact, with the same keys.

Logging never costs a training run: the first MLflow error switches live logging off with a
one-line warning on stderr, and training goes on.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

PHASE_TAG, TRAINED = "raincheck.phase", "trained"  # set on a training run whose weights were written
# Bookkeeping: how a run went (counts, durations, speeds), not a result to chart or compare.
BOOKKEEPING = ("iterations", "parameters", "trainable_parameters", "processes", "resumed_from_step", "patches_per_s")


def is_bookkeeping(key: str) -> bool:
    """True for counts, durations and speeds (`seconds*`, `*_patches`, `n_images/*`, BOOKKEEPING)."""
    return key in BOOKKEEPING or key.startswith(("seconds", "n_images")) or key.endswith("_patches")


def flatten(prefix: str, obj: object) -> dict[str, str]:
    """Nested params as MLflow params: {"a.b": "value"} (values as text, at most 500 characters)."""
    if isinstance(obj, dict):
        out: dict[str, str] = {}
        for key, value in obj.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), value))
        return out
    return {prefix: str(obj)[:500]}


def split_training_metrics(metrics: dict) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, bookkeeping) of a training metrics.json.

    Scores (`psnr_rain/val`, `final_loss`, `recon_psnr`, ...) are finite floats for MLflow
    metrics; bookkeeping (is_bookkeeping: iterations, seconds, counts, patches/s) and non-numbers
    become params as text: they describe the run.
    """
    scores, bookkeeping = {}, {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or is_bookkeeping(key):
            bookkeeping[key] = str(value)[:500]
        elif math.isfinite(value):  # MLflow takes no NaN; the gate reads NaN from tags instead
            scores[key] = float(value)
    return scores, bookkeeping


def row_metrics(row: dict, prefix: str) -> tuple[int, dict[str, float]]:
    """(step, {prefix/column: value}) of one log.csv row; non-numbers and NaN are left out."""
    step = int(float(row["step"]))
    out = {}
    for key, value in row.items():
        if key == "step":
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[f"{prefix}/{key}"] = number
    return step, out


def log_rows(client, run_id: str, rows: list[dict], prefix: str) -> int:
    """Log log.csv rows as step-wise metrics in one batch per row; returns the number of rows."""
    from mlflow.entities import Metric

    for row in rows:
        step, values = row_metrics(row, prefix)
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])
    return len(rows)


def log_summary(client, run_id: str, metrics: dict, prefix: str, step: int, curves: set[str] = frozenset()) -> None:
    """A training metrics.json: scores as metrics at the last step (not a stray point at step 0),
    except those the curves (log.csv columns) already end with; bookkeeping as params `{prefix}_run.<key>`."""
    from mlflow.entities import Metric, Param

    scores, bookkeeping = split_training_metrics(metrics)
    scores = {k: v for k, v in scores.items() if k not in curves}
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{prefix}/{k}", v, now, step) for k, v in scores.items()],
                     params=[Param(f"{prefix}_run.{k}", v) for k, v in bookkeeping.items()])


class LiveRun:
    """One training run in the `raincheck` experiment, fed as training goes.

    kind: `derain` or `prior` (tag `raincheck.kind`, the metric prefix is `train` or `prior`).
    Every method is a no-op once logging is off.
    """

    def __init__(self, client, run_id: str, prefix: str):
        self.client, self.run_id, self.prefix = client, run_id, prefix
        self.curves: set[str] = set()  # log.csv columns sent so far

    @classmethod
    def start(cls, kind: str, run_name: str, params: dict[str, str], root: Path) -> "LiveRun | None":
        """Open the run (None when MLflow is not configured or cannot be reached).

        params: flat text params (flatten), the same keys and values the registration logs."""
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            return None
        try:
            import mlflow

            from pipeline.tracking import ensure_experiment
            from pipeline.lineage import git_commit

            client = mlflow.MlflowClient(tracking_uri=uri)
            commit, dirty = git_commit(Path(root))
            run = client.create_run(ensure_experiment(client), run_name=f"{run_name} @{commit[:8]}", tags={
                "raincheck.kind": kind, PHASE_TAG: "training", "git_commit": commit, "git_dirty": str(dirty).lower()})
            from mlflow.entities import Param

            client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
        except Exception as error:  # noqa: BLE001 (any MLflow failure: train without live logging)
            print(f"[raincheck] warning: live MLflow logging off ({type(error).__name__}: {str(error)[:200]})", file=sys.stderr)
            return None
        return cls(client, run.info.run_id, "train" if kind == "derain" else kind)

    def _guard(self, action) -> None:
        if self.client is None:
            return
        try:
            action()
        except Exception as error:  # noqa: BLE001
            print(f"[raincheck] warning: live MLflow logging off ({type(error).__name__}: {str(error)[:200]})", file=sys.stderr)
            self.client = None

    def log_rows(self, rows: list[dict]) -> None:
        """New log.csv rows (a resumed run sends the restored rows first: the curve is whole)."""
        self.curves.update(key for row in rows for key in row)
        self._guard(lambda: log_rows(self.client, self.run_id, rows, self.prefix))

    def finish(self, metrics: dict, weights: Path, step: int) -> None:
        """The summary, the digest of the weights written (how the registration finds this run), FINISHED."""
        from pipeline.lineage import file_sha256

        def action():
            log_summary(self.client, self.run_id, metrics, self.prefix, step, self.curves)
            self.client.set_tag(self.run_id, "model_sha256", file_sha256(weights))
            self.client.set_tag(self.run_id, PHASE_TAG, TRAINED)
            self.client.set_terminated(self.run_id, "FINISHED")

        self._guard(action)

    def fail(self) -> None:
        self._guard(lambda: self.client.set_terminated(self.run_id, "FAILED"))


def find_trained_run(client, experiment_id: str, kind: str, sha256: str) -> str | None:
    """The live training run that wrote the weights with this sha256 (newest first), or None."""
    runs = client.search_runs([experiment_id], max_results=1, order_by=["attributes.start_time DESC"], filter_string=(
        f"tags.model_sha256 = '{sha256}' and tags.`raincheck.kind` = '{kind}' and tags.`{PHASE_TAG}` = '{TRAINED}'"))
    return runs[0].info.run_id if runs else None
