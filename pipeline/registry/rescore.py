"""Re-score a registered version on the workspace's test suites.

The gate compares a candidate with the champion rule by rule, which only means something when both
were scored on the same images. After a pool, split or suite change (the versions' `suites_digest`
tags differ) the champion's own checkpoint is taken from the registry, run through the evaluate
step's code on the candidate's suites, and those metrics stand in for the champion's logged ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pipeline import layout
from pipeline.config import Params


class RescoreError(RuntimeError):
    """The champion could not be re-scored; the message says why (the gate then refuses)."""


def _checkpoint_of(client, name: str, version: str, folder: Path) -> Path:
    """Download version `version`'s logged model into `folder`; the path of its `model.pt`."""
    import mlflow

    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)))
    except Exception as error:  # MLflow raises several types for a missing or unreadable artifact
        raise RescoreError(f"cannot download {name} version {version}: {error}") from None
    found = sorted(local.rglob(layout.MODEL))
    if not found:
        raise RescoreError(f"{name} version {version} holds no model.pt in its logged model ({local})")
    return found[0]


def rescore_version(client, params: Params, root: Path, name: str, version: str) -> dict[str, float]:
    """Metrics of registered `version` on the workspace's suites (`evaluate.suites`), with the
    same keys and the same code as the evaluate step (`<metric>/<suite>`, dB); NaN kept as NaN."""
    from pipeline.evaluation.evaluate import evaluate_model, load_suites
    from pipeline.models.factory import CheckpointError, load_derain_model

    settings = params.evaluate
    suites = load_suites(params, Path(root))
    with tempfile.TemporaryDirectory(prefix="raincheck-rescore-") as scratch:
        checkpoint = _checkpoint_of(client, name, version, Path(scratch))
        try:
            model = load_derain_model(checkpoint)
        except (CheckpointError, FileNotFoundError) as error:
            raise RescoreError(f"{name} version {version}: {error}") from None
    result = evaluate_model(model, suites, mask_threshold=settings.mask_threshold, report_images=0,
                            tile=settings.tile, overlap=settings.overlap, batch_size=settings.batch_size)
    return {key: float(value) for key, value in result.metrics.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
