"""`raincheck registry show|promote|rollback`: the registry as a team reads and steers it."""

from __future__ import annotations

from pipeline.config import Params
from pipeline.registry.register import CANDIDATE, CHAMPION, RegistryError, alias_version, mlflow_client, version_metrics

GATED = ("psnr_rain/unseen", "psnr_bg/unseen", "psnr_rain_gain/unseen", "psnr/seen", "psnr/unseen")


def show(params: Params) -> str:
    """A table of every version: aliases, gate result, key metrics, lineage."""
    client = mlflow_client()
    name = params.register.model_name
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), reverse=True)
    if not versions:
        return f"{name}: no versions registered yet (run `make run`)."
    aliases = {alias: str(getattr(alias_version(client, name, alias), "version", "")) for alias in (CHAMPION, CANDIDATE)}
    header = ["version", "aliases", "gate", *GATED, "git", "data"]
    rows = []
    for version in versions:
        metrics = version_metrics(client, version)
        rows.append([
            version.version,
            ",".join(a for a, v in aliases.items() if v == str(version.version)) or "-",
            version.tags.get("gate", "-") + (" (manual)" if version.tags.get("manual_promotion") else ""),
            *(f"{metrics[k]:.2f}" if k in metrics else "-" for k in GATED),
            version.tags.get("git_commit", "-")[:8],
            version.tags.get("data_digest", "-")[:8],
        ])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = [f"registered model: {name}"]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def promote(params: Params, version: str, reason: str) -> str:
    """Point `champion` at `version` by hand, recording who-knows-why on the version."""
    if not reason:
        raise RegistryError("a manual promotion needs --reason (it is recorded on the version)")
    client = mlflow_client()
    name = params.register.model_name
    target = client.get_model_version(name, str(version))
    current = alias_version(client, name, CHAMPION)
    if current is not None and str(current.version) != str(target.version):
        client.set_model_version_tag(name, target.version, "previous_champion", str(current.version))
    client.set_model_version_tag(name, target.version, "manual_promotion", reason)
    client.set_registered_model_alias(name, CHAMPION, target.version)
    return f"{name}: champion -> version {target.version} ({reason})"


def rollback(params: Params, reason: str = "") -> str:
    """Move `champion` back to the version it replaced."""
    client = mlflow_client()
    name = params.register.model_name
    current = alias_version(client, name, CHAMPION)
    if current is None:
        raise RegistryError(f"{name} has no champion to roll back")
    previous = current.tags.get("previous_champion")
    if not previous:
        raise RegistryError(f"{name} version {current.version} replaced no earlier champion: nothing to roll back to")
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current.version, "rolled_back", reason or "rollback")
    return f"{name}: champion {current.version} -> {previous} (rolled back)"
