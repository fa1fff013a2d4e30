"""The study's statistics: factor effects with paired-bootstrap intervals, and per-claim verdicts.

A factor's effect is the mean difference (high level minus low level, dB) between cells that differ
only in that factor, paired on the same seed and the same test image, averaged over the other
factors' values. Its 95% interval resamples seeds and test images with replacement (a paired
bootstrap: both levels of a pair are always drawn together), seeded from params `seed`.

Per-image inputs are a cell's evaluate/per_image.csv rows; the OOD gain of an image is the mean of
its `psnr_rain_gain` (rain-region) or `psnr_bg_gain` (background) over `study.ood_suites`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from pipeline.config import digest
from pipeline.seeds import numpy_rng
from pipeline.study import SEED_KEY, short

N_KEY, POLICY_KEY, MODEL_KEY = "curate.selection.n_backgrounds", "curate.selection.policy", "train.model"
GAINS = {"rain": "psnr_rain_gain", "bg": "psnr_bg_gain"}
METRIC_NAMES = {"rain": "OOD rain-region gain", "bg": "OOD background gain"}

# method.md, "The study that makes the claim visible": the directions the paper predicts.
# (name, factor, metric, predicted sign of high - low, interaction factor or None)
CLAIMS = [
    ("more backgrounds leave OOD rain in", "N", "rain", -1, None),
    ("more complex backgrounds leave OOD rain in", "complexity", "rain", -1, None),
    ("the prior removes more OOD rain than the plain model", "model", "rain", +1, None),
    ("the prior narrows the complexity gap", "complexity", "rain", +1, "model"),
]


def ood_image_gains(per_image: list[dict], ood_suites: list[str]) -> dict[str, dict[str, float]]:
    """{image_id: {"rain": dB, "bg": dB}}: each gain averaged over the OOD suites the image is in."""
    sums: dict[str, dict[str, list[float]]] = {}
    for row in per_image:
        if row.get("suite") not in ood_suites:
            continue
        entry = sums.setdefault(str(row["image_id"]), {"rain": [], "bg": []})
        for name, column in GAINS.items():
            value = row.get(column)
            if value not in (None, "") and math.isfinite(float(value)):
                entry[name].append(float(value))
    return {image: {name: (sum(v) / len(v) if v else math.nan) for name, v in entry.items()} for image, entry in sums.items()}


def factor_levels(results: list[dict]) -> dict[str, tuple[str, Any, Any]]:
    """{factor: (params key, low level, high level)} for the factors the grid varies (levels as `short` labels).

    N: smallest vs largest; complexity: smooth vs textured; model: resnet vs the other model.
    Only finished cells (with per-image scores) count.
    """
    values: dict[str, set] = {}
    for result in results:
        if result.get("per_image") is None:
            continue  # a failed cell: its level has nothing to pair
        for key, value in result["config"].items():
            values.setdefault(key, set()).add(short(value))
    out = {}
    if len(values.get(N_KEY, ())) >= 2:
        numbers = sorted(int(v) for v in values[N_KEY])
        out["N"] = (N_KEY, str(numbers[0]), str(numbers[-1]))
    if {"smooth", "textured"} <= values.get(POLICY_KEY, set()):
        out["complexity"] = (POLICY_KEY, "smooth", "textured")
    models = sorted(values.get(MODEL_KEY, set()) - {"resnet"})
    if "resnet" in values.get(MODEL_KEY, set()) and models:
        out["model"] = (MODEL_KEY, "resnet", "masked_prior" if "masked_prior" in models else models[0])
    return out


def paired_matrix(results: list[dict], key: str, low: str, high: str, metric: str, ood_suites: list[str],
                  where: Callable[[dict], bool] = lambda config: True) -> np.ndarray:
    """M[seed, image]: high minus low of the per-image OOD `metric` ("rain" | "bg"), dB, averaged over
    the contexts (the other factors' values) where both levels finished. Empty (0, 0) when none did."""
    cells: dict[tuple[str, Any, str], dict] = {}
    for result in results:
        if result.get("per_image") is None or not where(result["config"]):
            continue
        context = digest({k: v for k, v in result["config"].items() if k != key})
        level = short(result["config"].get(key))
        cells[(context, result["overrides"].get(SEED_KEY), level)] = ood_image_gains(result["per_image"], ood_suites)
    pairs = {(c, s): (cells[(c, s, high)], cells[(c, s, low)]) for (c, s, lvl) in cells if lvl == high and (c, s, low) in cells}
    if not pairs:
        return np.zeros((0, 0))
    contexts = sorted({c for c, _ in pairs})
    seeds = sorted({s for _, s in pairs}, key=str)
    images = sorted(set.intersection(*(set(h) & set(lo) for h, lo in pairs.values())))
    cube = np.full((len(contexts), len(seeds), len(images)), np.nan)
    for (c, s), (h, lo) in pairs.items():
        cube[contexts.index(c), seeds.index(s)] = [h[i][metric] - lo[i][metric] for i in images]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a context lacking a seed leaves NaN, not an error
        return np.nanmean(cube, axis=0)


def bootstrap_ci(matrix: np.ndarray, resamples: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """(effect, low, high): the mean of matrix[seed, image] (dB) and its 95% percentile interval when
    seeds and images are resampled with replacement. NaN when the matrix is empty."""
    if matrix.size == 0 or not np.isfinite(matrix).any():
        return math.nan, math.nan, math.nan
    n_seeds, n_images = matrix.shape
    seed_idx = rng.integers(0, n_seeds, size=(resamples, n_seeds))
    image_idx = rng.integers(0, n_images, size=(resamples, n_images))
    draws = np.empty(resamples)
    for start in range(0, resamples, 256):  # chunks keep the (chunk, seeds, images) gather small
        stop = min(start + 256, resamples)
        sample = matrix[seed_idx[start:stop, :, None], image_idx[start:stop, None, :]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            draws[start:stop] = np.nanmean(sample.reshape(stop - start, -1), axis=1)
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return float(np.nanmean(matrix)), float(low), float(high)


def verdict(low: float, high: float, sign: int) -> str:
    """`observed` when the interval excludes 0 in the predicted direction, `opposite` when it excludes
    0 the other way, else `not resolved` (also for an interval that could not be computed)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not resolved"
    if (sign > 0 and low > 0) or (sign < 0 and high < 0):
        return "observed"
    if (sign > 0 and high < 0) or (sign < 0 and low > 0):
        return "opposite"
    return "not resolved"


def effects(results: list[dict], ood_suites: list[str], resamples: int, seed: int) -> dict:
    """Every factor's effect on both OOD gains, and every claim's verdict.

    Returns {"effects": [{factor, contrast, metric, effect, low, high}], "claims": [{claim, ..., verdict}]}.
    """
    levels = factor_levels(results)
    rows, claims = [], []
    for factor, (key, low, high) in levels.items():
        for metric in GAINS:
            matrix = paired_matrix(results, key, low, high, metric, ood_suites)
            effect, lo, hi = bootstrap_ci(matrix, resamples, numpy_rng(seed, "study/bootstrap", factor, metric))
            rows.append({"factor": factor, "contrast": f"{high} − {low}", "metric": METRIC_NAMES[metric],
                         "effect": effect, "low": lo, "high": hi, "pairs": int(np.isfinite(matrix).sum())})
    for name, factor, metric, sign, across in CLAIMS:
        if factor not in levels or (across and across not in levels):
            claims.append({"claim": name, "contrast": "-", "metric": METRIC_NAMES[metric], "predicted": "> 0" if sign > 0 else "< 0",
                           "effect": math.nan, "low": math.nan, "high": math.nan, "verdict": "not resolved",
                           "note": "the grid does not vary " + (factor if factor not in levels else across)})
            continue
        key, low, high = levels[factor]
        if across is None:
            matrix, contrast = paired_matrix(results, key, low, high, metric, ood_suites), f"{factor}: {high} − {low}"
        else:  # interaction: the factor's effect under the high level of `across` minus under its low level
            akey, alow, ahigh = levels[across]
            under = [paired_matrix(results, key, low, high, metric, ood_suites, lambda c, lv=lv: short(c.get(akey)) == lv)
                     for lv in (ahigh, alow)]
            matrix = under[0] - under[1] if under[0].shape == under[1].shape and under[0].size else np.zeros((0, 0))
            contrast = f"({high} − {low} | {ahigh}) − ({high} − {low} | {alow})"
        effect, lo, hi = bootstrap_ci(matrix, resamples, numpy_rng(seed, "study/bootstrap/claim", name))
        claims.append({"claim": name, "contrast": contrast, "metric": METRIC_NAMES[metric], "predicted": "> 0" if sign > 0 else "< 0",
                       "effect": effect, "low": lo, "high": hi, "verdict": verdict(lo, hi, sign), "note": ""})
    return {"effects": rows, "claims": claims}


def _ci(row: dict) -> str:
    return "-" if not math.isfinite(row["effect"]) else f"{row['effect']:+.2f} dB [{row['low']:+.2f}, {row['high']:+.2f}]"


def effects_markdown(found: dict) -> list[str]:
    """Markdown lines: the per-claim verdicts, then the factor-effect table (effect [95% CI])."""
    lines = ["## Claims (method.md), paired bootstrap over seeds and test images, 95% CI", "",
             "| claim | contrast | predicted | effect [95% CI] | verdict |", "|---|---|---|---|---|"]
    for c in found["claims"]:
        lines.append(f"| {c['claim']} | {c.get('contrast', '-')} | {c.get('predicted', '-')} | {_ci(c)} | "
                     f"**{c['verdict']}**{(' (' + c['note'] + ')') if c['note'] else ''} |")
    lines += ["", "## Factor effects", "", "| factor | contrast | metric | effect [95% CI] | image×seed pairs |", "|---|---|---|---|---|"]
    lines += [f"| {r['factor']} | {r['contrast']} | {r['metric']} | {_ci(r)} | {r['pairs']} |" for r in found["effects"]]
    return lines
