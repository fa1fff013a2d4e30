"""The study's pure parts: the grid expands exactly, cells validate, aggregation and recommendation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError
from pipeline.study import aggregate, cell_params, expand_grid, nested, recommend, set_dotted

REPO = Path(__file__).resolve().parents[2]


def test_grid_expands_to_the_product_times_seeds():
    grid = {"curate.selection.n_backgrounds": [4, 16, 64], "train.rain.presets": [["small"], ["small", "medium"]]}
    cells = expand_grid(grid, seeds=[1, 2])
    assert len(cells) == 3 * 2 * 2
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {c.as_dict["train.seed"] for c in cells} == {1, 2}
    assert len({tuple(sorted((k, str(v)) for k, v in c.config.items())) for c in cells}) == 6
    assert expand_grid(grid, seeds=[1, 2]) == cells  # deterministic order


def test_empty_axis_is_an_error():
    with pytest.raises(ParamsError, match="study.grid.train.rain.presets"):
        expand_grid({"train.rain.presets": []}, seeds=[1])


def test_cell_params_apply_and_validate():
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    params = cell_params(base, {"curate.selection.n_backgrounds": 16, "train.rain.presets": ["small"], "train.seed": 3})
    assert params.curate.selection.n_backgrounds == 16
    assert params.train.seed == 3
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == base
    with pytest.raises(ParamsError, match="names no params section"):
        cell_params(base, {"curat.selection.n_backgrounds": 16})
    with pytest.raises(ParamsError, match="curate.selection.n_backgrounds"):
        cell_params(base, {"curate.selection.n_backgrounds": -1})


def test_set_dotted_and_nested_round_trip():
    raw = {"a": {"b": {"c": 1}}}
    set_dotted(raw, "a.b.c", [2])
    assert raw == {"a": {"b": {"c": [2]}}}
    assert nested({"a.b.c": 2, "a.d": 3}) == {"a": {"b": {"c": 2}, "d": 3}}


def test_aggregate_mean_std_and_failures():
    results = [
        {"config": {"n": 4}, "metrics": {"m": 10.0, "bg": 30.0}},
        {"config": {"n": 4}, "metrics": {"m": 12.0, "bg": 30.0}},
        {"config": {"n": 16}, "metrics": None},
        {"config": {"n": 16}, "metrics": {"m": 20.0, "bg": 10.0}},
    ]
    rows = {r["config"]["n"]: r for r in aggregate(results, ["m", "bg"])}
    assert rows[4]["m:mean"] == 11.0 and math.isclose(rows[4]["m:std"], math.sqrt(2))
    assert rows[16]["failed"] == 1 and rows[16]["seeds"] == 1
    best = recommend(list(rows.values()), "m", "bg", floor=25.0)
    assert best["config"] == {"n": 4}  # n=16 scores higher but breaks the background floor
    assert recommend(list(rows.values()), "m", "bg", floor=99.0) is None


# ----------------------------------------------------------------------------- convergence
def _curve(values, every=10):
    return [{"step": every * (i + 1), "psnr/val": v} for i, v in enumerate(values)]


def test_convergence_flags_a_curve_still_moving_in_its_last_fifth():
    from pipeline.study import convergence

    flat = _curve([10, 20, 25, 26, 26.1, 26.1, 26.15, 26.2, 26.1, 26.2])  # steps 10..100; last fifth from 80
    assert convergence(flat, "psnr/val", 0.25)["converged"] is True
    rising = _curve([10, 20, 25, 26, 27, 28, 29, 30, 31, 32])
    verdict = convergence(rising, "psnr/val", 0.25)
    assert verdict["converged"] is False and math.isclose(verdict["delta_db"], 2.0)
    assert "study.convergence_tolerance_db=0.25" in verdict["reason"]
    # rose and fell back inside the last fifth: the largest excursion counts, not end minus start
    bump = _curve([10, 20, 25, 26, 26, 26, 26, 26, 28, 26])
    assert convergence(bump, "psnr/val", 0.25)["converged"] is False


def test_convergence_without_a_usable_curve_is_not_converged():
    from pipeline.study import convergence

    assert convergence([], "psnr/val", 1.0)["converged"] is False
    assert "train.val_suites" in convergence(_curve([20.0]), "psnr/val", 1.0)["reason"]
    sparse = [{"step": 90, "psnr/val": 20.0}, {"step": 100, "psnr/val": 20.0}]  # nothing at or before step 80
    assert "train.val_every" in convergence(sparse, "psnr/val", 1.0)["reason"]


def test_check_study_names_the_keys():
    from pipeline.config import load_params, read_params
    from pipeline.study import check_study

    quick = load_params(REPO / "profiles" / "study-quick.yaml")
    base = read_params(REPO / "profiles" / "study-quick.yaml")
    cell = cell_params(base, quick.study.fixed)
    check_study(quick.study, cell)  # the shipped profile is consistent
    with pytest.raises(ParamsError, match="study.ood_suites"):
        check_study(quick.study.model_copy(update={"ood_suites": ["nowhere"]}), cell)
    with pytest.raises(ParamsError, match="train.val_suites"):
        check_study(quick.study.model_copy(update={"convergence_metric": "psnr/seen"}), cell)


# ----------------------------------------------------------------------------- effects and verdicts
MODELS = {"resnet": {"type": "resnet", "channels": 16, "blocks": 2}, "masked_prior": {"type": "masked_prior", "blocks": 1}}


def made_up_cells(rain, seeds=(1, 2, 3), images=8, noise=0.05):
    """A full N x complexity x model grid; rain(n, policy, model) -> the OOD rain-region gain (dB) of
    every image, plus seeded per-image noise; the background gain is 0 + noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    cells = []
    for n in (64, 256, 1024):
        for policy in ("smooth", "textured"):
            for name, model in MODELS.items():
                for seed in seeds:
                    config = {"curate.selection.n_backgrounds": n, "curate.selection.policy": policy, "train.model": model}
                    per_image = [{"suite": suite, "image_id": f"img{i}", "psnr_rain_gain": rain(n, policy, name) + noise * rng.standard_normal(),
                                  "psnr_bg_gain": noise * rng.standard_normal()}
                                 for i in range(images) for suite in ("unseen", "screen", "seen")]
                    cells.append({"cell_id": f"{n}{policy}{name}{seed}", "label": "", "config": config,
                                  "overrides": {**config, "train.seed": seed}, "metrics": {}, "error": None, "per_image": per_image})
    return cells


def test_paper_direction_is_observed_when_the_data_show_it():
    from pipeline.study_stats import effects

    # more and more textured backgrounds leave rain in; the prior removes 3 dB more and halves the texture penalty
    def rain(n, policy, model):
        penalty = (1.0 if policy == "textured" else 0.0) * (0.5 if model == "masked_prior" else 1.0)
        return 5.0 - 0.5 * math.log2(n / 64) - penalty + (3.0 if model == "masked_prior" else 0.0)

    found = effects(made_up_cells(rain), ["unseen", "screen"], resamples=500, seed=1)
    claims = {c["claim"]: c for c in found["claims"]}
    assert [c["verdict"] for c in found["claims"]] == ["observed"] * 4
    n_effect = claims["more backgrounds leave OOD rain in"]
    assert math.isclose(n_effect["effect"], -2.0, abs_tol=0.05) and n_effect["low"] < -1.9 and n_effect["high"] < 0
    assert math.isclose(claims["the prior narrows the complexity gap"]["effect"], 0.5, abs_tol=0.05)
    background = [r for r in found["effects"] if r["metric"] == "OOD background gain"]
    assert len(background) == 3 and all(abs(r["effect"]) < 0.05 and r["high"] - r["low"] < 0.2 for r in background)  # none built in


def test_opposite_and_unresolved_verdicts():
    from pipeline.study_stats import effects, verdict

    def rain(n, policy, model):  # more backgrounds remove MORE rain; complexity does nothing
        return 5.0 + 0.5 * math.log2(n / 64)

    found = effects(made_up_cells(rain, noise=1.0), ["unseen", "screen"], resamples=500, seed=1)
    claims = {c["claim"]: c["verdict"] for c in found["claims"]}
    assert claims["more backgrounds leave OOD rain in"] == "opposite"
    assert claims["more complex backgrounds leave OOD rain in"] == "not resolved"
    assert verdict(0.1, 0.5, +1) == "observed" and verdict(-0.5, -0.1, +1) == "opposite" and verdict(-0.1, 0.1, -1) == "not resolved"
    assert verdict(math.nan, math.nan, +1) == "not resolved"


def test_bootstrap_is_seeded_and_pairs_images():
    import numpy as np

    from pipeline.seeds import numpy_rng
    from pipeline.study_stats import bootstrap_ci

    matrix = np.array([[1.0, 2.0, 3.0, 4.0], [1.5, 2.5, 3.5, 4.5], [0.5, 1.5, 2.5, 3.5]])
    first = bootstrap_ci(matrix, 1000, numpy_rng(7, "x"))
    assert first == bootstrap_ci(matrix, 1000, numpy_rng(7, "x"))
    assert math.isclose(first[0], 2.5) and first[1] < 2.5 < first[2] and first[1] >= 1.0
    assert all(math.isnan(v) for v in bootstrap_ci(np.zeros((0, 0)), 100, numpy_rng(7, "x")))


def test_a_grid_without_a_factor_leaves_its_claims_unresolved():
    from pipeline.study_stats import effects

    cells = [c for c in made_up_cells(lambda n, p, m: 1.0) if c["config"]["train.model"]["type"] == "resnet"]
    claims = {c["claim"]: c for c in effects(cells, ["unseen"], 200, 1)["claims"]}
    assert claims["the prior removes more OOD rain than the plain model"]["verdict"] == "not resolved"
    assert "does not vary model" in claims["the prior removes more OOD rain than the plain model"]["note"]


# ----------------------------------------------------------------------------- recommendation
def _summary(converged_flags):
    from pipeline.config import load_params
    from pipeline.study_report import summarize
    from pipeline.study_stats import effects

    params = load_params(REPO / "profiles" / "study-quick.yaml")
    results = []
    for i, ok in enumerate(converged_flags):
        metrics = {params.study.objective: 10.0 + i, params.study.floor_metric: 0.5}
        results.append({"cell_id": f"c{i}", "label": f"n={i}", "config": {"curate.selection.n_backgrounds": 64 * (i + 1)},
                        "overrides": {"train.seed": 1}, "metrics": metrics, "error": None, "per_image": [],
                        "convergence": {"converged": ok, "delta_db": 0.1 if ok else 3.0, "reason": "" if ok else "moved 3.00 dB"}})
    rows = aggregate(results, [params.study.objective, params.study.floor_metric])
    table = [{"configuration": str(r["config"]), "seeds": r["seeds"]} for r in rows]
    return summarize(params, results, rows, table, effects(results, params.study.ood_suites, 100, 1))


def test_nothing_converged_means_no_recommendation():
    markdown, best, suggestion = _summary([False, False])
    assert best is None and suggestion == {}
    assert markdown.splitlines()[2].startswith("**NOT CONVERGED: 2 of 2 cells")
    assert "**0 of 2 converged**" in markdown and "moved 3.00 dB" in markdown


def test_one_unconverged_cell_withholds_the_recommendation():
    markdown, best, _ = _summary([True, False])
    assert best is None and "NOT CONVERGED: 1 of 2" in markdown


def test_all_converged_recommends_the_best_configuration():
    markdown, best, suggestion = _summary([True, True])
    assert "NOT CONVERGED" not in markdown and "**2 of 2 converged**" in markdown
    assert best["config"] == {"curate.selection.n_backgrounds": 128}  # the higher objective
    assert suggestion["curate"]["selection"]["n_backgrounds"] == 128
