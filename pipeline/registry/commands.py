"""`raincheck registry show|history|promote|rollback`: the registry as a team reads and steers it.

Promotions and rollbacks hold the registry lock and append to the champion history (history.py).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.evaluation.headline import headline_suites, suite_columns
from pipeline.registry import history
from pipeline.tracking import (
    CANDIDATE, CHAMPION, RegistryError, alias_version, mlflow_client, registry_lock, resolve_version, version_metrics,
    version_state,
)


def key_metrics(params: Params) -> list[str]:
    """The table's metric columns: the headline out-of-distribution suite's rain-region and
    background scores, then whole-image PSNR on both headline suites (evaluation/headline.py)."""
    seen, unseen = headline_suites(params)
    return list(dict.fromkeys([*suite_columns(["psnr_rain", "psnr_bg", "psnr_rain_gain"], [unseen]),
                               *suite_columns(["psnr"], [seen, unseen])]))


def show(params: Params) -> str:
    """A table of every version: aliases, gate result, key metrics, lineage."""
    client = mlflow_client()
    name = params.register.model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    if not versions:
        return f"{name}: no versions registered yet (run `make run`)."
    aliases = {alias: str(getattr(alias_version(client, name, alias), "version", "")) for alias in (CHAMPION, CANDIDATE)}
    gated = key_metrics(params)
    header = ["version", "aliases", "state", "gate", *gated, "git", "data"]
    rows = []
    for version in versions:
        metrics = version_metrics(client, version)
        rows.append([
            version.version,
            ",".join(a for a, v in aliases.items() if v == str(version.version)) or "-",
            version_state(version),
            version.tags.get("gate", "-") + (" (manual)" if version.tags.get("manual_promotion") else ""),
            *(f"{metrics[k]:.2f}" if k in metrics else "-" for k in gated),
            version.tags.get("git_commit", "-")[:8],
            version.tags.get("data_digest", "-")[:8],
        ])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [f"registered model: {name}"]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def promote(params: Params, version: str, reason: str, root: Path = Path(".")) -> str:
    """Point `champion` at `version` by hand, recording why on the version and in the history."""
    if not reason:
        raise RegistryError("a manual promotion needs --reason (it is recorded on the version and in the history)")
    name = params.register.model_name
    with registry_lock(root):
        client = mlflow_client()
        target = resolve_version(client, name, str(version))
        if version_state(target) != "aliased":
            raise RegistryError(f"{name} version {target.version} is half-registered (state {version_state(target)!r}): "
                                "run `raincheck register` to finish it first")
        current = alias_version(client, name, CHAMPION)
        previous = str(current.version) if current is not None else None
        if previous == str(target.version):
            return f"{name}: version {target.version} is already the champion"
        history.append(client, name, "promote", str(target.version), previous, reason)
        if previous is not None:
            client.set_model_version_tag(name, target.version, "previous_champion", previous)
        client.set_model_version_tag(name, target.version, "manual_promotion", reason)
        client.set_registered_model_alias(name, CHAMPION, target.version)
    return f"{name}: champion {previous or '(none)'} -> version {target.version} ({reason})"


def rollback(params: Params, reason: str = "", root: Path = Path(".")) -> str:
    """Move `champion` back one step in the history (to the champion the current one replaced)."""
    name = params.register.model_name
    with registry_lock(root):
        client = mlflow_client()
        current, previous = history.rollback_target(client, name)
        history.append(client, name, "rollback", previous, current, reason or "rollback")
        client.set_model_version_tag(name, current, "rolled_back", reason or "rollback")
        client.set_registered_model_alias(name, CHAMPION, previous)
    return f"{name}: champion {current} -> {previous} (rolled back)"


def show_history(params: Params) -> str:
    """Every champion change, oldest first, and where a rollback would go now."""
    client = mlflow_client()
    name = params.register.model_name
    past = history.events(client, name)
    if not past:
        return f"{name}: no champion changes recorded yet"
    header = ["seq", "at", "action", "champion", "was", "reason"]
    rows = [[str(e["seq"]), e["at"], e["action"], e["version"], e["from"] or "-", e["reason"] or "-"] for e in past]
    widths = [max(len(x) for x in column) for column in zip(header, *rows)]
    lines = [f"champion history of {name}"] + ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    stack = history.champion_stack(past)
    lines.append(f"champion now: {stack[-1] if stack else '-'}; `raincheck registry rollback` would return to: "
                 f"{stack[-2] if len(stack) > 1 else 'nothing (first champion)'}")
    return "\n".join(lines)
