"""Plain-text and Markdown summaries of a pipeline run (printed by `make run`, shown in Prefect)."""

from __future__ import annotations

import math
from pathlib import Path

from pipeline import layout

# (metric key prefix, label) in the order a reader wants them: model vs its rainy input.
SUMMARY_METRICS = (
    ("psnr_rain", "rain-region PSNR (dB)"),
    ("psnr_rain_input", "  rainy input"),
    ("psnr_rain_gain", "  gain over input"),
    ("psnr_bg", "background PSNR (dB)"),
    ("psnr_bg_input", "  rainy input"),
    ("psnr", "whole-image PSNR (dB)"),
    ("psnr_input", "  rainy input"),
    ("ssim", "SSIM"),
)


def _cell(value: object) -> str:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return f"{value:.2f}"
    return "-"


def metrics_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """(suite names, rows of [label, value per suite]) from flat `<metric>/<suite>` keys."""
    suites = sorted({key.split("/", 1)[1] for key in metrics if "/" in key})
    rows = [
        [label, *(_cell(metrics.get(f"{key}/{suite}")) for suite in suites)]
        for key, label in SUMMARY_METRICS
        if any(f"{key}/{suite}" in metrics for suite in suites)
    ]
    return suites, rows


def metrics_table(metrics: dict) -> str:
    """Fixed-width text table of the evaluation metrics, one column per suite."""
    suites, rows = metrics_rows(metrics)
    header = ["metric", *suites]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in [header, *rows])


def metrics_markdown(metrics: dict) -> str:
    suites, rows = metrics_rows(metrics)
    lines = ["| metric | " + " | ".join(suites) + " |", "|---" * (len(suites) + 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def registration_lines(result: dict) -> list[str]:
    aliases = ", ".join(result.get("aliases") or []) or "none"
    status = {"created": "new version", "resumed": "half-registered version finished",
              "reproduced": "reproduced: identical weights already registered"}.get(result.get("status"), "new version" if result.get("created") else "already registered")
    gate = "NONE (register.gates: none)" if result.get("gate") == "none" else ("PASSED" if result.get("promote") else "FAILED")
    lines = [
        f"registered model: {result['model_name']} version {result['version']} ({status})",
        f"aliases on this version: {aliases}; champion is version {result.get('champion_version')}",
        *(f"note: {note}" for note in result.get("notes") or []),
        *(f"WARNING: {warning}" for warning in result.get("warnings") or []),
        "gate: " + gate,
    ]
    lines += [f"  {reason}" for reason in result.get("reasons", []) if reason]
    return lines


MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` (README "What make run does") listens


def mlflow_links(registration: dict, ui: str = MLFLOW_UI) -> list[str]:
    """Markdown links to the version and its run in the MLflow UI (served by `mlflow ui`)."""
    name, version, run_id = registration.get("model_name"), registration.get("version"), registration.get("run_id")
    links = [f"- MLflow model version: [{name} v{version}]({ui}/#/models/{name}/versions/{version})"] if name and version else []
    if run_id:
        links.append(f"- MLflow run: [{run_id[:12]}]({ui}/#/runs/{run_id})")
    return links


def run_markdown(result: dict, params, root: Path | None = None) -> str:
    """The retrain flow's artifact: what data changed, metrics vs champion, the gate and its reasons."""
    change = result.get("data_change") or {}
    registration = result["registration"]
    champion = registration.get("champion_metrics") or {}
    lines = ["# raincheck retrain", "", "## Data"]
    lines.append(f"- pool: {change.get('images', '?')} photos; added {len(change.get('added', []))}, removed {len(change.get('removed', []))}")
    for key in ("added", "removed"):
        if change.get(key):
            lines.append(f"- {key}: " + ", ".join(change[key][:20]) + (" ..." if len(change[key]) > 20 else ""))
    ran = result.get("stages_run", [])
    lines.append("- stages run: " + (", ".join(ran) if ran else "none (nothing changed; DVC skipped every stage)"))
    lines += ["", "## Metrics", metrics_markdown(result["metrics"]), ""]
    if champion:
        lines.append(f"### vs champion (version {registration.get('previous_champion')})")
        lines.append("| metric | candidate | champion |")
        lines.append("|---|---|---|")
        rules = params.register.rules
        for key in sorted(set(rules.floors) | set(rules.champion_tolerance)) if rules is not None else []:
            lines.append(f"| {key} | {_cell(result['metrics'].get(key))} | {_cell(champion.get(key))} |")
        lines.append("")
    lines += ["## Registry", *(f"- {line.strip()}" for line in registration_lines(registration)), *mlflow_links(registration)]
    root = Path(root or ".").resolve()
    lines += ["", "## Reports", *(f"- [{rel}]({(root / rel).as_uri()})" for rel in (
        f"{params.paths.registry}/{layout.REPORT}", f"{params.paths.evaluation}/{layout.REPORT}", f"{params.paths.curated}/{layout.REPORT}",
        f"{params.paths.suites}/{layout.GALLERY}", f"{params.paths.registry}/{layout.DECISION}"))]
    if result.get("committed"):
        lines.append(f"- results committed to `{params.schedule.results_branch}` at {result['committed'][:10]}")
    return "\n".join(lines)
