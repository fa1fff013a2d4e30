"""The study's evidence: tables, heat maps, the trade-off plot, the recommendation, MLflow runs.

Writes under `build/study/`: cells.csv (one row per cell and seed, with its convergence), table.csv
(mean ± std per configuration), curves.csv (every cell's validation curve), effects.csv and
claims.csv (pipeline/study_stats.py), heatmaps.png, tradeoff.png, recommendation.md,
suggested_params.yaml (empty unless every cell converged and one configuration clears the floor),
recommendation.json (the same decision, machine-readable: what `raincheck study apply` applies).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from pipeline import layout
from pipeline.config import Params
from pipeline.evaluation.headline import headline_suites, suite_columns
from pipeline.io import atomic_path, write_csv, write_json
from pipeline.study import aggregate, nested, recommend, short

OUTPUT = "build/study"  # the study's output folder, under the workspace root

# Per-suite metrics tabulated for the headline suites (out-of-distribution first; evaluation/headline.py).
SUITE_METRICS = ["psnr_rain", "psnr_bg", "psnr_rain_gain", "psnr_bg_gain", "psnr"]


def _fmt(mean: float, std: float) -> str:
    return "-" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def _heatmaps(params: Params, rows: list[dict], path: Path) -> None:
    """One panel per facet combination: objective mean over heatmap.x × heatmap.y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    spec, objective = params.study.heatmap, params.study.objective
    value = lambda row, key: short(row["config"].get(key, "-"))  # noqa: E731
    xs = sorted({value(r, spec.x) for r in rows}, key=lambda v: (len(v), v))
    ys = sorted({value(r, spec.y) for r in rows}, key=lambda v: (len(v), v))
    facets = sorted({tuple(value(r, f) for f in spec.facets) for r in rows})
    fig, axes = plt.subplots(1, len(facets), figsize=(3.2 * len(facets) + 1, 0.6 * len(ys) + 2), squeeze=False)
    finite = [r[f"{objective}:mean"] for r in rows if math.isfinite(r[f"{objective}:mean"])]
    vmin, vmax = (min(finite), max(finite)) if finite else (0, 1)
    for ax, facet in zip(axes[0], facets):
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in rows:
            if tuple(value(r, f) for f in spec.facets) == facet:
                grid[ys.index(value(r, spec.y)), xs.index(value(r, spec.x))] = r[f"{objective}:mean"]
        image = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", color="white", fontsize=8)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(spec.x.rsplit(".", 1)[-1])
        if ax is axes[0][0]:
            ax.set_yticks(range(len(ys)), ys)
            ax.set_ylabel(spec.y.rsplit(".", 1)[-1])
        else:  # the panels share y: labels only on the first, so they never run into the panel on their left
            ax.set_yticks(range(len(ys)), [""] * len(ys))
        ax.set_title(" / ".join(facet), fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), label=f"{objective} (dB, mean over seeds)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _tradeoff(params: Params, rows: list[dict], path: Path) -> None:
    """Rain removal (the objective) against background reconstruction (the floor metric), per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_key, y_key = params.study.floor_metric, params.study.objective
    fig, ax = plt.subplots(figsize=(6, 4.5))
    models = sorted({short(r["config"].get("train.model", "-")) for r in rows})
    for model in models:
        mine = [r for r in rows if short(r["config"].get("train.model", "-")) == model]
        ax.errorbar([r[f"{x_key}:mean"] for r in mine], [r[f"{y_key}:mean"] for r in mine],
                    xerr=[r[f"{x_key}:std"] for r in mine], yerr=[r[f"{y_key}:std"] for r in mine],
                    fmt="o", capsize=2, label=model)
    ax.axvline(params.study.floor, color="grey", linestyle=":", label=f"floor {params.study.floor:g} dB")
    ax.set_xlabel(f"{x_key} (dB): background reconstruction")
    ax.set_ylabel(f"{y_key} (dB): rain removal")
    ax.set_title("rain removal vs background reconstruction (mean ± std over seeds)")
    ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _log_mlflow(params: Params, results: list[dict], out: Path, lineage: dict) -> str:
    """One parent run for the study, one child run per cell; returns the parent run id."""
    import mlflow

    from pipeline.tracking import ensure_experiment, mlflow_client

    client = mlflow_client()
    experiment = ensure_experiment(client, "raincheck-study")
    with mlflow.start_run(experiment_id=experiment, run_name="study") as parent:
        mlflow.set_tags(lineage)
        mlflow.log_params({"cells": len(results), "seeds": len(params.study.seeds), "objective": params.study.objective})
        for result in results:
            with mlflow.start_run(experiment_id=experiment, run_name=f"cell-{result['cell_id']}", nested=True):
                mlflow.set_tags({**lineage, "cell_id": result["cell_id"], "status": "failed" if result["metrics"] is None else "ok",
                                 "converged": str(_converged(result))})
                for row in result.get("curve") or []:  # the learning curve, step-wise
                    value = row.get(params.study.convergence_metric)
                    if isinstance(value, (int, float)) and value == value:
                        mlflow.log_metric("val_curve", float(value), step=int(row["step"]))
                mlflow.log_params({k: str(v)[:500] for k, v in result["overrides"].items()})
                if result["metrics"]:
                    mlflow.log_metrics({k: float(v) for k, v in result["metrics"].items() if isinstance(v, (int, float)) and v == v})
        for name in layout.STUDY_OUTPUTS:
            if (out / name).is_file():
                mlflow.log_artifact(str(out / name))
        return parent.info.run_id


def with_ood_means(result: dict, ood_suites: list[str]) -> dict:
    """The cell's metrics plus `ood_rain_gain` / `ood_bg_gain`: the mean over the OOD suites (dB)."""
    metrics = result["metrics"]
    if metrics is None:
        return result
    extra = {}
    for name, column in (("ood_rain_gain", "psnr_rain_gain"), ("ood_bg_gain", "psnr_bg_gain")):
        values = [metrics.get(f"{column}/{s}") for s in ood_suites]
        values = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        extra[name] = sum(values) / len(values) if values else math.nan
    return {**result, "metrics": {**metrics, **extra}}


def _converged(result: dict) -> bool:
    return bool((result.get("convergence") or {}).get("converged"))


def _curves(results: list[dict], metric: str) -> list[dict]:
    """Long-format learning curves: one row per cell and logged step."""
    return [{"cell_id": r["cell_id"], "label": r["label"], "step": row["step"], metric: row.get(metric, "")}
            for r in results for row in (r.get("curve") or [])]


def summarize(params: Params, results: list[dict], rows: list[dict], table_rows: list[dict], found: dict) -> tuple[str, dict | None, dict]:
    """(recommendation.md text, the recommended row or None, the suggested params block).

    Nothing is recommended unless every cell (failed ones count as not converged) converged.
    """
    from pipeline.study_stats import effects_markdown

    study = params.study
    n_converged = sum(_converged(r) for r in results)
    failed = sum(r["metrics"] is None for r in results)
    all_converged = bool(results) and n_converged == len(results)
    lines = ["# raincheck study", ""]
    if not all_converged:
        lines += [f"**NOT CONVERGED: {len(results) - n_converged} of {len(results)} cells did not converge "
                  f"(or failed): no recommendation.** Train longer (train.iterations in study.fixed) or raise "
                  f"study.convergence_tolerance_db; the verdicts below are not evidence.", ""]
    lines += [f"{len(results)} cells, {failed} failed, **{n_converged} of {len(results)} converged** "
              f"(`{study.convergence_metric}` moves ≤ {study.convergence_tolerance_db:g} dB over the last fifth of training); "
              f"objective `{study.objective}` (mean ± std over seeds), floor `{study.floor_metric}` ≥ {study.floor:g} dB; "
              f"OOD = {', '.join(study.ood_suites)}.", ""]
    header = list(table_rows[0]) if table_rows else []
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in table_rows]
    lines += [""] + effects_markdown(found)
    not_converged = [r for r in results if not _converged(r)]
    if not_converged:
        lines += ["", "Cells not converged:", ""]
        lines += [f"- {r['cell_id']} ({r['label']}): {(r.get('convergence') or {}).get('reason') or (r['error'] or 'failed')[:200]}"
                  for r in not_converged]
    best = recommend(rows, study.objective, study.floor_metric, study.floor) if all_converged else None
    suggestion = {}
    if not all_converged:
        lines += ["", "**No recommendation**: not every cell converged."]
    elif best is None:
        lines += ["", "**No configuration met the background floor**: no recommendation."]
    else:
        suggestion = nested({**study.fixed, **best["config"]})
        lines += ["", f"**Recommended**: {', '.join(f'{k}={short(v)}' for k, v in best['config'].items())} — "
                  f"{study.objective} {_fmt(best[study.objective + ':mean'], best[study.objective + ':std'])} dB, "
                  f"{study.floor_metric} {_fmt(best[study.floor_metric + ':mean'], best[study.floor_metric + ':std'])} dB.",
                  "", "Suggested params block:", "", "```yaml", yaml.safe_dump(suggestion, sort_keys=False).rstrip(), "```"]
    return "\n".join(lines), best, suggestion


def recommendation_record(params: Params, results: list[dict], best: dict | None) -> dict:
    """recommendation.json: {"config": the recommended configuration's grid overrides ({dotted key:
    value}) or None, "reason": why nothing is recommended ("" when something is), "fixed": study.fixed
    (the regime every cell trained under, e.g. shorter training: recorded, not a recommendation),
    objective / floor names and the recommended configuration's means (dB), cell counts}."""
    study = params.study
    n_converged = sum(_converged(r) for r in results)
    if not results or n_converged < len(results):
        reason = f"{len(results) - n_converged} of {len(results)} cells did not converge (or failed)"
    elif best is None:
        reason = f"no configuration met the floor {study.floor_metric} >= {study.floor:g} dB"
    else:
        reason = ""
    return {"config": best["config"] if best else None, "reason": reason, "fixed": study.fixed,
            "objective": study.objective, "objective_mean": best[f"{study.objective}:mean"] if best else None,
            "floor_metric": study.floor_metric, "floor": study.floor,
            "floor_metric_mean": best[f"{study.floor_metric}:mean"] if best else None,
            "cells": len(results), "converged": n_converged}


def write_study_outputs(params: Params, root: Path, results: list[dict], lineage: dict) -> dict:
    """Write every study output and log them; returns the markdown, table rows and counts.

    results: one dict per cell and seed (flows/study.py): config, overrides, metrics | None, error,
    curve (log.csv rows), per_image (per_image.csv rows), convergence ({converged, delta_db, reason}).
    """
    from pipeline.study_stats import effects

    study = params.study
    out = Path(root) / OUTPUT
    out.mkdir(parents=True, exist_ok=True)
    results = [with_ood_means(r, study.ood_suites) for r in results]
    seen, unseen = headline_suites(params)
    metrics = list(dict.fromkeys([study.objective, study.floor_metric, "ood_rain_gain", "ood_bg_gain",
                                  *suite_columns(SUITE_METRICS, [unseen, seen])]))
    write_csv(out / layout.STUDY_CELLS, [
        {"cell_id": r["cell_id"], "label": r["label"], "error": (r["error"] or "")[:200], "worker": r.get("worker") or "",
         "converged": _converged(r), "last_fifth_delta_db": (r.get("convergence") or {}).get("delta_db", ""),
         **{m: (r["metrics"] or {}).get(m, "") for m in metrics}} for r in results
    ])
    write_csv(out / layout.STUDY_CURVES, _curves(results, study.convergence_metric), ["cell_id", "label", "step", study.convergence_metric])
    rows = aggregate(results, metrics)
    converged_by_config: dict[str, int] = {}
    for r in results:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={short(v)}" for k, v in r["config"].items())
        converged_by_config[label] = converged_by_config.get(label, 0) + _converged(r)
    table_rows = []
    for r in rows:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={short(v)}" for k, v in r["config"].items())
        table_rows.append({"configuration": label, "seeds": r["seeds"], "failed": r["failed"], "converged": converged_by_config[label],
                           **{m: _fmt(r[f"{m}:mean"], r[f"{m}:std"]) for m in metrics[:5]}})
    write_csv(out / layout.STUDY_TABLE, table_rows)
    completed = [r for r in rows if r["seeds"]]
    if completed:
        _heatmaps(params, completed, out / layout.STUDY_HEATMAPS)
        _tradeoff(params, completed, out / layout.STUDY_TRADEOFF)
    found = effects(results, study.ood_suites, study.bootstrap, params.seed)
    write_csv(out / layout.STUDY_EFFECTS, found["effects"], ["factor", "contrast", "metric", "effect", "low", "high", "pairs"])
    write_csv(out / layout.STUDY_CLAIMS, found["claims"], ["claim", "contrast", "metric", "predicted", "effect", "low", "high", "verdict", "note"])
    markdown, best, suggestion = summarize(params, results, rows, table_rows, found)
    n_converged, failed = sum(_converged(r) for r in results), sum(r["metrics"] is None for r in results)
    with atomic_path(out / layout.STUDY_RECOMMENDATION) as tmp:
        tmp.write_text(markdown + "\n")
    with atomic_path(out / layout.STUDY_SUGGESTED_PARAMS) as tmp:
        tmp.write_text(yaml.safe_dump(suggestion, sort_keys=False))
    write_json(out / layout.STUDY_RECOMMENDATION_JSON, recommendation_record(params, results, best))
    run_id = _log_mlflow(params, results, out, lineage)
    return {"markdown": markdown, "table_rows": table_rows, "completed": len(completed), "failed": failed,
            "converged": n_converged, "claims": found["claims"],
            "recommendation": best["config"] if best else None, "mlflow_parent_run": run_id, "outputs": str(out)}
