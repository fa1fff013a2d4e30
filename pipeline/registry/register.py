"""Register the prior and the deraining model in MLflow, with lineage, and apply the gate.

Identity: a version is its weights. The workspace's `model.pt` (by sha256) is looked up first; a
model already registered is never registered twice, whatever git says (lineage.py records code,
data and params digests beside it). A new model is always registered and gated.

Registration is a resumable state machine recorded in the version tag `raincheck.state`:

    created    the version exists, with its lineage tags and the MLflow run holding its metrics
    evaluated  the champion to compare with is fixed (tag `gate_champion`)
    gated      the decision is recorded (tags `gate`, `gate_reasons`)
    aliased    `candidate` points at it and, when the gate passed, `champion` too (with a history event)

A crash or a transient error anywhere leaves the version in the last state it reached; the next
run (Prefect's retry included) finds it by its weights and finishes it with the same decision. The
whole registration holds the registry lock (client.registry_lock).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pipeline import layout
from pipeline.config import Params, digest, load_params
from pipeline.io import read_json, write_json
from pipeline.lineage import lineage_tags
from pipeline.registry import history
from pipeline.registry.mlflow_log import log_derain_run, numeric, pip_requirements, register_prior  # noqa: F401
from pipeline.registry.promotion import Decision, GateError, check_rules, decide
from pipeline.registry.report_title import write_registry_report
from pipeline.registry.rescore import RescoreError, rescore_version
from pipeline.tracking import (
    CANDIDATE, CHAMPION, STATE_TAG, RegistryError, alias_version, find_version, mlflow_client, registry_lock, version_metrics,
    version_state,
)

# Fault injection for the crash-recovery tests and for drills: set to a state name and the
# registration fails right after reaching it, as a crash or a "database is locked" would. With
# FAULT_ONCE_ENV set to a file path, it fails only while that file does not exist (and creates it).
FAULT_ENV, FAULT_ONCE_ENV = "RAINCHECK_FAULT_AFTER_STATE", "RAINCHECK_FAULT_ONCE"


class InjectedFault(RuntimeError):
    """The fault FAULT_ENV asked for: transient by design, so Prefect's retries apply to it."""


def _fault(state: str) -> None:
    if os.environ.get(FAULT_ENV) != state:
        return
    marker = os.environ.get(FAULT_ONCE_ENV)
    if marker:
        if Path(marker).exists():
            return
        Path(marker).touch()
    raise InjectedFault(f"fault injected after state {state!r} ({FAULT_ENV}={state})")
RESCORED_NOTE = "note the champion was re-scored on this candidate's test images and compared on those"
NO_GATE_WARNING = "WARN register.gates is `none` in params.yaml: promoted without a gate"


def _advance(client, name: str, version: str, tags: dict, state: str, **new_tags: str) -> None:
    """Record `new_tags` and then the new state (so a state is never ahead of its data)."""
    for key, value in {**new_tags, STATE_TAG: state}.items():
        client.set_model_version_tag(name, version, key, value)
        tags[key] = value
    _fault(state)


def check_params_file(params: Params, root: Path) -> None:
    """Refuse params other than the workspace's params.yaml: the DVC stages that built the model
    read that file, so any other would mislabel the version."""
    workspace = Path(root) / layout.PARAMS
    if not workspace.is_file() or digest(load_params(workspace)) != digest(params):
        raise RegistryError(f"the params given differ from {workspace}, which the DVC stages read: register with {workspace} "
                            "(or install the other file with `raincheck profile NAME`, then run again)")


def gate_metrics(client, version) -> dict[str, float]:
    """A version's metrics as the gate sees them: its run's metrics, plus NaN for the keys the
    evaluation wrote as NaN (MLflow drops them; a NaN fails its rule, a missing key is an error)."""
    metrics = version_metrics(client, version)
    metrics.update({key: math.nan for key in version.tags.get("nan_metrics", "").split(",") if key and key not in metrics})
    return metrics


def _gate(client, params: Params, root: Path, name: str, version: str, tags: dict) -> Decision:
    """The decision for a version at state `evaluated`: its own metrics vs the recorded champion.

    When the champion was scored on other test images (a pool, split or suite change), it is
    re-scored on this workspace's suites first (rescore.py) and compared on those; the reasons say
    so. If it cannot be re-scored, the comparison is refused (floors still checked)."""
    candidate = gate_metrics(client, client.get_model_version(name, version))
    reference = tags["gate_champion"]
    champion = gate_metrics(client, client.get_model_version(name, reference)) if reference != "none" else None
    rules = params.register.rules
    if rules is None:
        return Decision(True, [NO_GATE_WARNING])
    label = f"champion version {reference}"
    check_rules(candidate, champion, rules.floors, rules.champion_tolerance, champion_label=label)
    differ = different_images(tags, client.get_model_version(name, reference).tags) if champion is not None else None
    if differ is None:
        return decide(candidate, champion, rules.floors, rules.champion_tolerance)
    try:
        rescored = rescore_version(client, params, root, name, reference)
        check_rules(candidate, rescored, rules.floors, rules.champion_tolerance, champion_label=f"{label} re-scored")
    except (RescoreError, GateError, FileNotFoundError, ValueError) as error:
        floors = decide(candidate, None, rules.floors, {})  # the floors still apply; the comparison does not
        return Decision(False, [r for r in floors.reasons if "no champion yet" not in r]
                        + [f"FAIL champion comparison refused: {differ}; re-scoring it failed: {error}"])
    decision = decide(candidate, rescored, rules.floors, rules.champion_tolerance)
    return Decision(decision.promote, decision.reasons + [f"{RESCORED_NOTE}: {differ}"])


def different_images(candidate_tags: dict, champion_tags: dict) -> str | None:
    """Why the candidate and the champion cannot be compared on their logged metrics (they were
    scored on different test images: a pool or split change), or None when they can. Versions
    without the tag (registered before it existed) are compared as before."""
    mine, theirs = candidate_tags.get("suites_digest", "unknown"), champion_tags.get("suites_digest", "unknown")
    if "unknown" in (mine, theirs) or mine == theirs:
        return None
    return f"the champion was scored on different test images (suites_digest {theirs[:12]} vs {mine[:12]}: the pool, split or suites changed)"


HEADLINE = ("psnr_rain_gain/seen", "psnr_rain_gain/unseen", "psnr_bg_gain/unseen", "psnr/clean")


def version_description(tags: dict, metrics: dict[str, float]) -> str:
    """The line the MLflow UI shows on a version: verdict, headline metrics (dB), champion and prior."""
    verdict = {"passed": "gate passed", "failed": "gate FAILED"}.get(tags.get("gate", ""), "not gated")
    failed = [r.split()[1] for r in tags.get("gate_reasons", "").split("\n") if r.startswith("FAIL") and len(r.split()) > 1]
    if failed:
        verdict += f" on {', '.join(failed[:4])}" + (" ..." if len(failed) > 4 else "")
    headline = ", ".join(f"{k} {metrics[k]:+.2f}" if "gain" in k else f"{k} {metrics[k]:.2f}"
                         for k in HEADLINE if k in metrics and metrics[k] == metrics[k])
    champion = tags.get("gate_champion", "none")
    return (f"{verdict}. {headline or 'no headline metrics'} dB. Compared with champion "
            f"{'version ' + champion if champion != 'none' else '(none yet)'}; prior {tags.get('prior_model', 'prior')} "
            f"version {tags.get('prior_version', '?')}.")


def finish(client, params: Params, root: Path, version) -> dict:
    """Walk one version from its current state to `aliased`; returns what the gate decided."""
    name, number, tags = params.register.model_name, str(version.version), dict(version.tags)
    state = version_state(version)
    if state == "created":
        champion = alias_version(client, name, CHAMPION)
        reference = str(champion.version) if champion is not None and str(champion.version) != number else "none"
        _advance(client, name, number, tags, "evaluated", gate_champion=reference)
        state = "evaluated"
    if state == "evaluated":
        decision = _gate(client, params, Path(root), name, number, tags)
        rescored = any(r.startswith(RESCORED_NOTE) for r in decision.reasons)
        _advance(client, name, number, tags, "gated", gate="passed" if decision.promote else "failed",
                 gate_reasons="\n".join(decision.reasons), champion_rescored=str(rescored).lower())
        state = "gated"
    if state == "gated":
        client.update_model_version(name, number, description=version_description(
            tags, gate_metrics(client, client.get_model_version(name, number))))
        client.set_registered_model_alias(name, CANDIDATE, number)
        if tags["gate"] == "passed":
            _crown(client, name, number, tags)
        _advance(client, name, number, tags, "aliased")
    return {"promote": tags.get("gate") == "passed", "reasons": tags.get("gate_reasons", "").split("\n"),
            "gate_champion": tags.get("gate_champion")}


def _crown(client, name: str, number: str, tags: dict) -> None:
    """Make `number` the champion, history first: a crash between the two is finished by the next
    run without a second history event."""
    current = alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) == number:
        return
    past = history.events(client, name)
    if not past or past[-1]["version"] != number or past[-1]["action"] not in history.PUSH_ACTIONS:
        history.append(client, name, "gate", number, str(current.version) if current else None, reason="gate passed")
    if current is not None:
        client.set_model_version_tag(name, number, "previous_champion", str(current.version))
    client.set_registered_model_alias(name, CHAMPION, number)


def _create(client, params: Params, root: Path, tags: dict[str, str], metrics: dict[str, float]):
    """Log the run and create the version at state `created` (tags set with the version)."""
    import mlflow

    prior_version = register_prior(client, params, root, tags)
    tags = {**tags, "prior_model": params.register.prior_name, "prior_version": str(prior_version)}
    run_id, model_uri = log_derain_run(client, params, root, tags, metrics)
    version = mlflow.register_model(model_uri, params.register.model_name, tags={**tags, "mlflow_run_id": run_id, STATE_TAG: "created"})
    _fault("created")
    return client.get_model_version(params.register.model_name, version.version)


def _precheck(client, params: Params, metrics: dict[str, float]) -> None:
    """Fail closed before anything is created: every rule's metric must exist."""
    rules = params.register.rules
    if rules is None:
        return
    champion = alias_version(client, params.register.model_name, CHAMPION)
    reference = gate_metrics(client, champion) if champion is not None else None
    label = f"champion version {champion.version}" if champion is not None else "the champion"
    check_rules(metrics, reference, rules.floors, rules.champion_tolerance, champion_label=label)


def run_register(params: Params, root: Path, flow_run_id: str | None = None) -> dict:
    """Register prior + deraining model, apply the gate, move aliases; returns the decision.

    Writes `{paths.registry}/decision.json`. Raises RegistryError (params other than params.yaml,
    no model) and promotion.GateError (a rule names a metric that does not exist).
    """
    root = Path(root)
    check_params_file(params, root)
    metrics_file = root / params.paths.evaluation / layout.METRICS
    if not metrics_file.is_file():
        raise RegistryError(f"{metrics_file} is missing: run the evaluate step first")
    evaluated = read_json(metrics_file)
    metrics = numeric(evaluated)
    nan_keys = sorted(k for k, v in evaluated.items() if isinstance(v, float) and math.isnan(v))
    name = params.register.model_name
    with registry_lock(root):
        client = mlflow_client()
        tags = lineage_tags(params, root, flow_run_id)
        if tags["model_sha256"] == "missing":
            raise RegistryError(f"{root / params.paths.model / layout.MODEL} is missing: run the train step first")
        version = find_version(client, name, "model_sha256", tags["model_sha256"])
        notes = []
        if version is not None and version_state(version) == "aliased":
            status = "reproduced"
            notes.append(f"identical weights to version {version.version} (model_sha256 {tags['model_sha256'][:12]}): nothing new registered")
            client.set_registered_model_alias(name, CANDIDATE, version.version)  # the workspace's model is the candidate
        elif version is not None:
            status = "resumed"
            notes.append(f"finished version {version.version}, left at state {version_state(version)!r} by an interrupted registration")
        else:
            status = "created"
            twin = find_version(client, name, "lineage_key", tags["lineage_key"])
            if twin is not None:
                notes.append(f"same code, data and params as version {twin.version} but different weights (training is not bit-reproducible)")
            _precheck(client, params, {**metrics, **{key: math.nan for key in nan_keys}})
            version = _create(client, params, root, {**tags, **({"nan_metrics": ",".join(nan_keys)[:5000]} if nan_keys else {})}, metrics)
        outcome = finish(client, params, root, version) if status != "reproduced" else {
            "promote": version.tags.get("gate") == "passed", "reasons": version.tags.get("gate_reasons", "").split("\n"),
            "gate_champion": version.tags.get("gate_champion")}
        result = _summary(client, params, client.get_model_version(name, version.version), status, outcome, notes)
    decision_file = root / params.paths.registry / layout.DECISION
    write_json(decision_file, result)
    if result.get("run_id"):  # beside the reports, so the run in the MLflow UI shows its verdict
        client.log_artifact(result["run_id"], str(decision_file), artifact_path="reports/registry")
    write_registry_report(client, params, root, result)  # the evaluation report titled with version and verdict
    return result


def _summary(client, params: Params, version, status: str, outcome: dict, notes: list[str]) -> dict:
    """What decision.json and the run summary say about this registration."""
    name, tags = params.register.model_name, version.tags
    reference = outcome.get("gate_champion")
    champion_metrics = version_metrics(client, client.get_model_version(name, reference)) if reference not in (None, "none") else {}
    champion = alias_version(client, name, CHAMPION)
    aliases = sorted(a for a in (CANDIDATE, CHAMPION) if (v := alias_version(client, name, a)) and str(v.version) == str(version.version))
    return {
        "model_name": name, "version": str(version.version), "status": status, "created": status == "created",
        "state": version_state(version), "promote": outcome["promote"], "reasons": [r for r in outcome["reasons"] if r],
        "gate": "none" if params.register.rules is None else tags.get("gate"),
        "warnings": [NO_GATE_WARNING] if params.register.rules is None else [], "notes": notes,
        "run_id": version.run_id, "prior_version": tags.get("prior_version"), "model_sha256": tags.get("model_sha256"),
        "lineage_key": tags.get("lineage_key"), "code_digest": tags.get("code_digest"),
        "previous_champion": None if reference in (None, "none") else reference, "champion_metrics": champion_metrics,
        "champion_rescored": tags.get("champion_rescored") == "true",
        "champion_version": str(champion.version) if champion else None, "aliases": aliases,
        "tracking_uri": os.environ.get("MLFLOW_TRACKING_URI"),
    }
