"""The generalization study, pure parts: grid expansion, cell params, aggregation, recommendation.

A study sweeps dotted params keys (the same keys `dvc exp run -S` takes) over lists of values.
Each cell is a complete, validated params file: the cell runs the very same DVC stages as the
retraining flow, in its own git worktree (flows/study.py); nothing here trains anything.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping

from pipeline.config import Params, ParamsError, digest, parse_params

SEED_KEY = "train.seed"


@dataclass(frozen=True)
class Cell:
    """One point of the grid. `overrides` maps dotted keys to values (seed included)."""

    overrides: tuple[tuple[str, Any], ...]

    @property
    def as_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def config(self) -> dict[str, Any]:
        """The overrides without the seed: cells differing only by seed share a configuration."""
        return {k: v for k, v in self.overrides if k != SEED_KEY}

    @property
    def cell_id(self) -> str:
        return digest(self.as_dict)[:10]

    @property
    def label(self) -> str:
        return ", ".join(f"{k.rsplit('.', 1)[-1]}={short(v)}" for k, v in self.overrides)


def short(value: Any) -> str:
    """A compact label for a grid value: lists joined with '+', model dicts by their type."""
    if isinstance(value, list):
        return "+".join(short(v) for v in value)
    if isinstance(value, dict):
        return str(value.get("type", digest(value)[:6]))
    return str(value)


def expand_grid(grid: Mapping[str, list], seeds: list[int]) -> list[Cell]:
    """Every combination of the grid's values (keys in the given order), times each seed."""
    axes = list(grid.items()) + [(SEED_KEY, list(seeds))]
    for key, values in axes:
        if not values:
            raise ParamsError(f"study.grid.{key}: needs at least one value")
    return [Cell(tuple(zip([k for k, _ in axes], combo))) for combo in itertools.product(*(v for _, v in axes))]


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set `a.b.c` in a nested dict; the parent sections must exist (typos are errors)."""
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ParamsError(f"study.grid: '{key}' names no params section ('{'.'.join(parts[: i + 1])}' is not one)")
        node = node[part]
    node[parts[-1]] = copy.deepcopy(value)


def cell_params(base: Mapping, overrides: Mapping[str, Any]) -> Params:
    """The base params (raw dict) with the study's fixed overrides and the cell's, validated."""
    raw = copy.deepcopy(dict(base))
    raw.pop("study", None)
    for key, value in overrides.items():
        set_dotted(raw, key, value)
    return parse_params(raw, source=f"study cell {digest(dict(overrides))[:10]}")


def mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    var = sum((v - mean) ** 2 for v in finite) / (len(finite) - 1) if len(finite) > 1 else 0.0
    return mean, math.sqrt(var)


def aggregate(results: list[dict], metrics: list[str]) -> list[dict]:
    """Group per-seed results by configuration: mean and std of each metric, seeds counted.

    results: [{"config": {...}, "metrics": {...} | None, "error": str | None}, ...]
    """
    groups: dict[str, dict] = {}
    for result in results:
        key = digest(result["config"])
        group = groups.setdefault(key, {"config": result["config"], "values": {m: [] for m in metrics}, "seeds": 0, "failed": 0})
        if result.get("metrics") is None:
            group["failed"] += 1
            continue
        group["seeds"] += 1
        for metric in metrics:
            group["values"][metric].append(result["metrics"].get(metric, math.nan))
    rows = []
    for group in groups.values():
        row = {"config": group["config"], "seeds": group["seeds"], "failed": group["failed"]}
        for metric, values in group["values"].items():
            row[f"{metric}:mean"], row[f"{metric}:std"] = mean_std(values)
        rows.append(row)
    return rows


def recommend(rows: list[dict], objective: str, floor_metric: str, floor: float) -> dict | None:
    """The configuration with the best mean objective among those whose mean floor_metric >= floor."""
    eligible = [r for r in rows if r["seeds"] and r.get(f"{floor_metric}:mean", math.nan) >= floor and math.isfinite(r.get(f"{objective}:mean", math.nan))]
    return max(eligible, key=lambda r: r[f"{objective}:mean"]) if eligible else None


def convergence(curve: list[dict], metric: str, tolerance_db: float) -> dict:
    """Whether a training curve has settled: its `metric` moves by at most `tolerance_db` over the
    last fifth of training.

    curve: log.csv rows in step order, each {"step": int, metric: float (dB), ...}.
    The reference is the last logged point at or before 80% of the final step; the movement is the
    largest |value - reference| from there to the end (max, not end minus start: a curve that rose
    and fell back has not settled). Returns {"converged": bool, "delta_db": float, "reason": str}.
    """
    points = [(int(r["step"]), float(r[metric])) for r in curve if r.get(metric) not in (None, "") and math.isfinite(float(r[metric]))]
    if len(points) < 2:
        return {"converged": False, "delta_db": math.nan,
                "reason": f"no validation curve: fewer than 2 points of `{metric}` (train.val_suites, train.val_every)"}
    final = points[-1][0]
    before = [p for p in points if p[0] <= 0.8 * final]
    if not before:
        return {"converged": False, "delta_db": math.nan,
                "reason": f"curve too sparse: no `{metric}` point in the first 80% of training (lower train.val_every)"}
    reference = before[-1][1]
    delta = max(abs(v - reference) for s, v in points if s >= before[-1][0])
    ok = delta <= tolerance_db
    return {"converged": ok, "delta_db": delta,
            "reason": "" if ok else f"`{metric}` moved {delta:.2f} dB over the last fifth (> study.convergence_tolerance_db={tolerance_db:g})"}


def check_study(study, params: Params) -> None:
    """One-line ParamsError when a cell's params (`params`) cannot give what `study` (params.study) reads."""
    missing = [s for s in study.ood_suites if s not in params.evaluate.suites]
    if missing:
        raise ParamsError(f"study.ood_suites names {missing}, not in evaluate.suites {list(params.evaluate.suites)}")
    suite = study.convergence_metric.rsplit("/", 1)[-1]
    if suite not in params.train.val_suites:
        raise ParamsError(f"study.convergence_metric `{study.convergence_metric}` reads suite '{suite}', "
                          f"not in train.val_suites {list(params.train.val_suites)}")


def nested(overrides: Mapping[str, Any]) -> dict:
    """Dotted overrides as the nested block one would paste into params.yaml."""
    out: dict = {}
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out
