"""The evaluate step on tiny suites the tests write: known answers, files, user folders, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pipeline.config import ParamsError, parse_params
from pipeline.evaluation.evaluate import evaluate_model, load_suites, run_evaluate, write_outputs
from pipeline.evaluation.report import make_sample, render_report
from pipeline.io import read_csv, read_json, save_png
from tests.fakes import Identity

REPO = Path(__file__).resolve().parents[2]
RAIN = 200  # the rain layer is 0 or 200; clean pixels are <= 50, so rainy = clean + R never clips
INPUT_RAIN_PSNR = 10 * math.log10(255**2 / RAIN**2)  # every rain pixel is off by 200: 2.11 dB


class PerfectDerainer(nn.Module):
    """Removes the test's rain exactly: rain pixels are the only ones above 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > 0.5, x - RAIN / 255, x)


def write_suite(folder: Path, count: int, seed: int, size=(24, 28), rainless: tuple[int, ...] = ()) -> None:
    """clean/rainy/rain PNGs: vertical streaks of R = 200 over a dark clean image."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        clean = rng.integers(0, 51, (*size, 3), dtype=np.uint8)
        rain = np.zeros(size, np.uint8)
        if index not in rainless:
            rain[:, rng.choice(size[1], 5, replace=False)] = RAIN
        save_png(folder / "clean" / f"img{index}.png", clean)
        save_png(folder / "rain" / f"img{index}.png", rain)
        save_png(folder / "rainy" / f"img{index}.png", clean + rain[..., None])


def make_params(root: Path, **evaluate):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["evaluate"].update(evaluate)
    return parse_params(raw)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace with the synthesized suites `seen` (one image without rain) and `unseen`."""
    write_suite(tmp_path / "build/suites/seen", 3, seed=0, rainless=(1,))
    write_suite(tmp_path / "build/suites/unseen", 3, seed=1)
    return tmp_path


# ----------------------------------------------------------------------------- known answers
def test_perfect_derainer_scores_known_values(workspace: Path):
    params = make_params(workspace, suites=["seen", "unseen"])
    result = evaluate_model(PerfectDerainer(), load_suites(params, workspace), report_images=0)
    metrics = result.metrics
    assert metrics["n_images/seen"] == 3 and metrics["empty_masks/seen"] == 1
    assert metrics["empty_masks/unseen"] == 0
    for suite in ("seen", "unseen"):
        assert metrics[f"psnr_rain/{suite}"] == 100.0  # capped: identical in the rain
        assert metrics[f"psnr_rain_input/{suite}"] == pytest.approx(INPUT_RAIN_PSNR, abs=1e-4)
        assert metrics[f"psnr_rain_gain/{suite}"] == pytest.approx(100.0 - INPUT_RAIN_PSNR, abs=1e-4)
        assert metrics[f"psnr_bg/{suite}"] == metrics[f"psnr_bg_input/{suite}"] == 100.0
        assert metrics[f"ssim/{suite}"] == pytest.approx(1.0)
    # the rainless image scores NaN in the rain region and is left out of the mean, not counted as 0
    rainless = next(row for row in result.rows if row["suite"] == "seen" and row["image_id"] == "img1")
    assert math.isnan(rainless["psnr_rain"]) and rainless["mask_coverage"] == 0.0
    assert not result.samples


def test_identity_model_gains_nothing(workspace: Path):
    params = make_params(workspace, suites=["unseen"])
    model = Identity()
    result = evaluate_model(model, load_suites(params, workspace), report_images=2, batch_size=2)
    assert [shape[0] for shape in model.shapes] == [2, 1]  # batched
    for key in ("psnr", "psnr_rain", "psnr_bg", "psnr_rain_soft", "ssim"):
        assert result.metrics[f"{key}_gain/unseen"] == 0.0
        assert result.metrics[f"{key}/unseen"] == result.metrics[f"{key}_input/unseen"]
    # worst and best by gain (all tied here: id order), the same images every run
    assert [s.image_id for s in result.samples] == ["img0", "img2"]


def test_report_samples_spread_from_worst_to_best():
    from pipeline.evaluation.evaluate import spread

    ranked = [(gain, name) for gain, name in [(3.0, "c"), (float("nan"), "n"), (-1.0, "a"), (2.0, "b"), (9.0, "d")]]
    assert spread(ranked, 3) == ["a", "c", "n"]  # NaN ranks last
    assert spread(ranked[:4], 3) == ["a", "c", "n"]  # ranks 0, 2, 3 of a, b, c, n
    assert spread(ranked, 1) == ["a"] and spread(ranked, 0) == [] and spread([], 3) == []


# ----------------------------------------------------------------------------- the step
def _save_untrained_resnet(path: Path) -> None:
    """A real checkpoint through the model factory; resnet starts as the identity."""
    from pipeline.models.factory import create_model, derain_checkpoint, parse_spec

    spec = parse_spec("resnet_tiny")
    model = create_model(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(derain_checkpoint(spec, model.state_dict(), None), path)


def test_run_evaluate_writes_the_contract_files(workspace: Path):
    _save_untrained_resnet(workspace / "build/model/model.pt")
    params = make_params(workspace, suites=["seen", "unseen"], report_images=1)
    summary = run_evaluate(params, workspace)
    out = workspace / "build/evaluation"
    metrics = read_json(out / "metrics.json")
    for suite in ("seen", "unseen"):
        for key in ("psnr", "psnr_rain", "psnr_bg", "psnr_input", "psnr_rain_input", "psnr_rain_gain",
                    "psnr_bg_input", "ssim", "psnr_y601", "empty_masks"):  # fmt: skip
            assert f"{key}/{suite}" in metrics
        assert metrics[f"psnr_rain_gain/{suite}"] == 0.0  # the untrained resnet is the identity
    assert summary["metrics"]["empty_masks/seen"] == 1
    rows = read_csv(out / "per_image.csv")
    assert len(rows) == 6 and list(rows[0])[:6] == ["suite", "image_id", "height", "width", "mask_coverage", "psnr"]
    assert next(r for r in rows if r["image_id"] == "img1" and r["suite"] == "seen")["psnr_rain"] == ""  # NaN
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_user_folders_paired_without_masks_and_unpaired(workspace: Path, tmp_path: Path):
    rng = np.random.default_rng(3)
    pairs, real = tmp_path / "pairs", tmp_path / "real"
    for index, size in enumerate([(40, 90), (40, 90), (70, 50)]):  # two sizes: batched and tiled paths
        clean = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        save_png(pairs / "clean" / f"p{index}.png", clean)
        save_png(pairs / "rainy" / f"p{index}.png", 255 - clean)
        save_png(real / f"photo{index}.png", clean)
    params = make_params(
        workspace,
        suites=["seen"],
        folders=[{"type": "paired", "name": "mine", "path": str(pairs)}, {"type": "unpaired", "name": "real", "path": str(real)}],
        tile=32,
        overlap=8,
    )
    suites = load_suites(params, workspace)
    assert [(s.name, s.kind, s.has_masks) for s in suites] == [("seen", "paired", True), ("mine", "paired", False), ("real", "unpaired", False)]
    model = Identity()
    result = evaluate_model(model, suites, tile=32, overlap=8, report_images=1)
    assert max(max(shape[2:]) for shape in model.shapes) <= 32  # images above the tile are tiled
    assert result.metrics["psnr_input/mine"] == result.metrics["psnr/mine"] < 10
    assert "psnr_rain/mine" not in result.metrics and "empty_masks/mine" not in result.metrics
    assert [key for key in result.metrics if key.endswith("/real")] == ["n_images/real"]
    assert {row["suite"] for row in result.rows} == {"seen", "mine"}
    real_sample = next(s for s in result.samples if s.suite == "real")
    assert real_sample.clean is None and real_sample.error is None
    written = write_outputs(tmp_path / "out", result, [s.name for s in suites])
    assert all(path.stat().st_size > 0 for path in written)


def test_report_is_deterministic_and_thumbnails_large_images(tmp_path: Path):
    rng = np.random.default_rng(4)
    clean = rng.integers(0, 256, (700, 650, 3), dtype=np.uint8)
    rain = np.zeros((700, 650), np.uint8)
    rain[:, ::9] = 200
    sample = make_sample("s", "big", clean, clean, clean, rain, 50, {"psnr": 100.0, "psnr_input": 100.0})
    assert max(sample.rainy.shape[:2]) <= 320 and sample.mask.shape == sample.error.shape == sample.rainy.shape[:2]
    metrics = {"psnr/s": 30.0, "psnr_input/s": 25.0, "n_images/s": 1}
    render_report(tmp_path / "a.png", metrics, ["s"], [sample])
    render_report(tmp_path / "b.png", metrics, ["s"], [sample])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


# ----------------------------------------------------------------------------- bad input
def test_missing_suite_folder_is_named(workspace: Path):
    params = make_params(workspace, suites=["seen", "unseen"])
    import shutil

    shutil.rmtree(workspace / "build/suites/unseen")
    with pytest.raises(FileNotFoundError, match=r"suite 'unseen'.*build/suites/unseen.*synthesize"):
        load_suites(params, workspace)


def test_unmatched_images_are_named(workspace: Path):
    (workspace / "build/suites/seen/rain/img2.png").unlink()
    with pytest.raises(ValueError, match=r"rain/.*unmatched: img2"):
        load_suites(make_params(workspace, suites=["seen"]), workspace)


def test_mask_size_mismatch_names_both_files(workspace: Path):
    save_png(workspace / "build/suites/seen/rain/img0.png", np.zeros((10, 10), np.uint8))
    suites = load_suites(make_params(workspace, suites=["seen"]), workspace)
    with pytest.raises(ValueError, match=r"size mismatch: .*rain/img0.png is 10x10 but .*rainy/img0.png is 28x24"):
        evaluate_model(Identity(), suites)


def test_unreadable_image_is_named(workspace: Path):
    (workspace / "build/suites/seen/clean/img2.png").write_bytes(b"not a png at all")
    suites = load_suites(make_params(workspace, suites=["seen"]), workspace)
    with pytest.raises(ValueError, match=r"cannot read image .*clean/img2.png"):
        evaluate_model(Identity(), suites)


def test_missing_model_says_to_train(workspace: Path):
    with pytest.raises(FileNotFoundError, match="model.pt.*raincheck train"):
        run_evaluate(make_params(workspace, suites=["seen"]), workspace)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"tile": 64, "overlap": 40}, "evaluate: .*overlap=40 must be at most tile / 2"),
        ({"folders": [{"type": "paired", "name": "seen", "path": "x"}]}, "unique.*seen"),
        ({"folders": [{"type": "video", "name": "v", "path": "x"}]}, "evaluate.folders.0"),
        ({"folders": [{"type": "unpaired", "name": "bad name", "path": "x"}]}, "letters, digits"),
        ({"report_count": 2}, "evaluate.report_count: unknown key"),
    ],
)
def test_bad_evaluate_params_name_the_key(tmp_path: Path, settings: dict, message: str):
    with pytest.raises(ParamsError, match=message):
        make_params(tmp_path, **settings)
