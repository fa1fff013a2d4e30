"""The study's pure parts: the grid expands exactly, cells validate, aggregation and recommendation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError
from pipeline.study import aggregate, cell_params, expand_grid, nested, recommend, set_dotted

REPO = Path(__file__).resolve().parents[1]


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
