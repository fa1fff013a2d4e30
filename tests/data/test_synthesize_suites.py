"""The `synthesize` step: suites on disk as docs/dataflow.md says, reproducible, with a gallery."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.config import ParamsError, parse_params
from pipeline.io import load_png, read_csv, save_png
from pipeline.seeds import stream_seed
from pipeline.synthesis.suites import MANIFEST_COLUMNS, run_synthesize
from tests.conftest import REPO, textured_photo

DISJOINT = {
    "name": "steep",
    "amount": [0.005, 0.007],
    "width": [3, 5],
    "width_probs": [0.5, 0.5],
    "length": [30, 40],
    "angle": [[-60, -35], [35, 60]],
    "beta": [0.8, 1.0],
}


RECIPE_SUITES = ("seen", "unseen")  # the repo's recipe suites; other kinds are tested on their own


def repo_params(**suites) -> dict:
    raw = copy.deepcopy(yaml.safe_load((REPO / "params.yaml").read_text()))
    raw["synthesize"]["suites"] = {name: raw["synthesize"]["suites"][name] for name in RECIPE_SUITES}
    raw["synthesize"]["suites"].update(suites)
    raw["evaluate"]["suites"] = list(RECIPE_SUITES)
    raw["train"]["val_suites"] = []
    raw["register"]["gates"]["floors"] = {}
    return raw


def make_curated(root: Path, params) -> None:
    """Three test and two val 'photos' (48×56) where curate would put them."""
    rng = np.random.default_rng(0)
    eval_dir = root / params.paths.curated / "eval"
    for split, count in (("test", 3), ("val", 2)):
        for i in range(count):
            save_png(eval_dir / split / f"photo-{split}-{i}.png", textured_photo(rng, 48, 56))


@pytest.fixture
def params():
    return parse_params(repo_params(disjoint={"presets": [DISJOINT], "split": "val"}))


def test_default_suites_and_a_custom_one_follow_the_contract(tmp_path, params):
    make_curated(tmp_path, params)
    summary = run_synthesize(params, tmp_path)
    suites = tmp_path / params.paths.suites
    assert set(summary["suites"]) == {"seen", "unseen", "disjoint"}
    assert summary["suites"]["seen"]["images"] == 3 and summary["suites"]["disjoint"]["images"] == 2
    for name, spec in params.synthesize.suites.items():
        rows = read_csv(suites / name / "manifest.csv")
        assert list(rows[0]) == MANIFEST_COLUMNS
        base = stream_seed(params.seed, "synthesize", name)
        sources = sorted((tmp_path / params.paths.curated / "eval" / spec.split).glob("*.png"))
        assert [row["image_id"] for row in rows] == [path.stem for path in sources]
        for index, (row, source) in enumerate(zip(rows, sources)):
            assert int(row["index"]) == index and int(row["seed"]) == base + index
            clean = load_png(suites / name / "clean" / f"{row['image_id']}.png")
            rainy = load_png(suites / name / "rainy" / f"{row['image_id']}.png")
            layer = load_png(suites / name / "rain" / f"{row['image_id']}.png", grey=True)
            assert np.array_equal(clean, load_png(source))
            assert layer.shape == clean.shape[:2] and layer.max() == 255
            assert float(row["coverage"]) == pytest.approx(np.mean(layer > params.synthesize.mask_threshold))
            expected = np.clip(np.rint(clean + np.float32(row["beta"]) * layer[..., None].astype(np.float32)), 0, 255)
            assert np.abs(rainy.astype(int) - expected.astype(int)).max() <= 1
    seen = {row["preset"] for row in read_csv(suites / "seen" / "manifest.csv")}
    assert seen <= {"small", "medium"}
    assert {row["preset"] for row in read_csv(suites / "unseen" / "manifest.csv")} == {"large"}
    steep = read_csv(suites / "disjoint" / "manifest.csv")
    assert all(row["preset"] == "steep" and 35 <= abs(int(row["angle"])) <= 60 for row in steep)
    gallery = load_png(suites / "gallery.png")
    assert gallery.shape[0] >= 7 * 128 and gallery.shape[1] >= 3 * 128  # 4 presets + 3 suites rows
    assert gallery.std() > 10


def test_suites_are_reproducible_across_runs(tmp_path, params):
    first, second = tmp_path / "a", tmp_path / "b"
    for root in (first, second):
        make_curated(root, params)
        run_synthesize(params, root)
    suites = Path(params.paths.suites)
    files = sorted(p.relative_to(first / suites) for p in (first / suites).rglob("*") if p.is_file())
    assert len(files) == 3 * (3 + 3 + 2) + 3 + 1  # pngs, manifests, gallery
    for relative in files:
        assert (first / suites / relative).read_bytes() == (second / suites / relative).read_bytes(), relative


def test_rerun_replaces_stale_suites(tmp_path, params):
    make_curated(tmp_path, params)
    run_synthesize(params, tmp_path)
    only_default = parse_params(repo_params())
    run_synthesize(only_default, tmp_path)
    assert sorted(p.name for p in (tmp_path / params.paths.suites).iterdir()) == ["gallery.png", "seen", "unseen"]


def test_missing_eval_images_name_the_folder(tmp_path, params):
    with pytest.raises(FileNotFoundError, match=r"eval/test.*seen"):
        run_synthesize(params, tmp_path)


def test_suite_rain_entries_are_validated_with_their_key():
    with pytest.raises(ParamsError, match=r"synthesize\.suites\.bad\.presets\.0\.preset"):
        parse_params(repo_params(bad={"presets": ["huge"]}))
    with pytest.raises(ParamsError, match=r"synthesize\.suites\.bad\.presets\.0\.custom\.width"):
        parse_params(repo_params(bad={"presets": [{**DISJOINT, "width": [2]}]}))
    raw = repo_params()
    raw["train"]["rain"]["presets"] = ["small", DISJOINT]
    assert parse_params(raw).train.rain.presets[1].name == "steep"


OTHER_KINDS = {
    "screen": {"generator": "screen_streaks"},
    "wind": {"generator": "wind_streaks"},
    "drops": {"generator": "drops"},
    "dry": {"generator": "clean"},
    "val": {"presets": ["small"], "split": "val", "max_images": 1},
}


def test_out_of_distribution_and_clean_suites_have_masks_and_reproduce(tmp_path):
    params = parse_params(repo_params(**OTHER_KINDS))
    runs = []
    for root in (tmp_path / "a", tmp_path / "b"):
        make_curated(root, params)
        summary = run_synthesize(params, root)
        runs.append(root / params.paths.suites)
    first, second = runs
    assert summary["suites"]["val"]["images"] == 1 and summary["suites"]["screen"]["images"] == 3
    for name in ("screen", "wind", "drops"):
        rows = read_csv(first / name / "manifest.csv")
        assert {row["preset"] for row in rows} == {OTHER_KINDS[name]["generator"]}
        for row in rows:
            clean = load_png(first / name / "clean" / f"{row['image_id']}.png")
            rainy = load_png(first / name / "rainy" / f"{row['image_id']}.png")
            layer = load_png(first / name / "rain" / f"{row['image_id']}.png", grey=True)
            assert layer.shape == clean.shape[:2] and (layer > params.synthesize.mask_threshold).any()
            assert float(row["coverage"]) == pytest.approx(np.mean(layer > params.synthesize.mask_threshold))
            assert not np.array_equal(rainy, clean)
    for row in read_csv(first / "dry" / "manifest.csv"):
        clean = load_png(first / "dry" / "clean" / f"{row['image_id']}.png")
        assert np.array_equal(load_png(first / "dry" / "rainy" / f"{row['image_id']}.png"), clean)
        assert not load_png(first / "dry" / "rain" / f"{row['image_id']}.png", grey=True).any()
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 3 * 3 * 6 + 3 + 7 + 1  # 3 images x 3 files x 6 three-image suites, val's 3, manifests, gallery
    for relative in files:
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative


def test_suite_generator_and_presets_must_agree():
    with pytest.raises(ParamsError, match=r"synthesize\.suites\.x.*needs presets"):
        parse_params(repo_params(x={"generator": "recipe"}))
    with pytest.raises(ParamsError, match=r"synthesize\.suites\.x.*presets apply to generator 'recipe' only"):
        parse_params(repo_params(x={"generator": "drops", "presets": ["small"]}))
    with pytest.raises(ParamsError, match=r"synthesize\.suites\.x\.generator"):
        parse_params(repo_params(x={"generator": "snow"}))
