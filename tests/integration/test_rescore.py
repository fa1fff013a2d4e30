"""After a pool or split change the champion is re-scored on the candidate's test images before the
gate compares them (real MLflow on SQLite, real checkpoints, the evaluate step's code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_params
from tests.conftest import textured_photo

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def write_suites(params, root: Path, seed: int, count: int = 2, size: int = 48) -> None:
    """Every evaluated suite as clean/ rainy/ rain/ PNGs: vertical grey streaks added to a photo
    (the dry suite gets an all-zero rain layer)."""
    rng = np.random.default_rng(seed)
    folder = root / params.paths.suites
    shutil.rmtree(folder, ignore_errors=True)
    for name in params.evaluate.suites:
        dry = params.synthesize.suites[name].generator == "clean"
        for sub in ("clean", "rainy", "rain"):
            (folder / name / sub).mkdir(parents=True)
        for i in range(count):
            clean = textured_photo(rng, size, size)
            rain = np.zeros((size, size), np.uint8)
            if not dry:
                rain[:, rng.choice(size, 6, replace=False)] = 200
            rainy = np.clip(clean.astype(np.int16) + rain[..., None], 0, 255).astype(np.uint8)
            for sub, image in (("clean", clean), ("rainy", rainy), ("rain", rain)):
                Image.fromarray(image).save(folder / name / sub / f"{i:03d}.png")


def save_model(path: Path, seed: int) -> object:
    """A small real deraining checkpoint (resnet_tiny, weights drawn from `seed`); returns the model."""
    import torch

    from pipeline.models.factory import create_model, derain_checkpoint, parse_spec

    torch.manual_seed(seed)
    spec = parse_spec("resnet_tiny")
    model = create_model(spec)
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.01 * torch.randn_like(weight))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(derain_checkpoint(spec, model.state_dict(), None), path)
    return model.eval()


def write_metrics(params, root: Path, metrics: dict) -> None:
    folder = root / params.paths.evaluation
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))


def workspace_params(root: Path, monkeypatch):
    """params.yaml copied into `root`, with this test's own SQLite registry and artifact folder."""
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    monkeypatch.setenv("RAINCHECK_MLFLOW_ARTIFACTS", str(root / "art"))
    return load_params(root / "params.yaml")


def test_champion_is_rescored_on_the_candidates_images_after_a_split_change(tmp_path, monkeypatch):
    from pipeline.evaluation.evaluate import evaluate_model, load_suites
    from pipeline.registry.register import RESCORED_NOTE, run_register

    params = workspace_params(tmp_path, monkeypatch)
    rules = params.register.rules
    floors = {key: floor + 1.0 for key, floor in rules.floors.items()}
    (tmp_path / params.paths.prior).mkdir(parents=True)
    (tmp_path / params.paths.prior / "prior.pt").write_bytes(b"prior")  # logged, never loaded

    # Version 1 on the first test images; its logged scores are deliberately far above what it
    # really does, so a comparison with the logged scores would refuse the candidate.
    write_suites(params, tmp_path, seed=1)
    champion = save_model(tmp_path / params.paths.model / "model.pt", seed=1)
    write_metrics(params, tmp_path, floors | {key: 100.0 for key in rules.champion_tolerance})
    assert run_register(params, tmp_path)["champion_version"] == "1"

    # The split changed: new test images, a new model honestly scored on them with the champion's
    # real quality there (same weights' outputs, so within every tolerance).
    write_suites(params, tmp_path, seed=2)
    save_model(tmp_path / params.paths.model / "model.pt", seed=2)
    real = evaluate_model(champion, load_suites(params, tmp_path), mask_threshold=params.evaluate.mask_threshold, report_images=0).metrics
    write_metrics(params, tmp_path, real | floors)
    second = run_register(params, tmp_path)

    assert second["champion_rescored"] is True
    assert any(r.startswith(RESCORED_NOTE) for r in second["reasons"]), second["reasons"]
    tolerance_lines = [r for r in second["reasons"] if r.split()[1] in rules.champion_tolerance]
    assert tolerance_lines and all(r.startswith("ok") for r in tolerance_lines), second["reasons"]
    assert second["promote"] and second["champion_version"] == "2"
    decision = json.loads((tmp_path / params.paths.registry / "decision.json").read_text())
    assert decision["champion_rescored"] is True


def test_a_champion_that_cannot_be_rescored_is_not_compared(tmp_path, monkeypatch):
    """Stand-in weights that no model can load: the comparison is refused, naming why; the floors
    are still checked."""
    from pipeline.registry.register import run_register

    params = workspace_params(tmp_path, monkeypatch)
    rules = params.register.rules
    metrics = {key: floor + 1.0 for key, floor in rules.floors.items()} | {key: 30.0 for key in rules.champion_tolerance}
    write_suites(params, tmp_path, seed=1, count=1)
    (tmp_path / params.paths.prior).mkdir(parents=True)
    (tmp_path / params.paths.prior / "prior.pt").write_bytes(b"prior")
    model = tmp_path / params.paths.model / "model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"weights 1")
    write_metrics(params, tmp_path, metrics)
    assert run_register(params, tmp_path)["champion_version"] == "1"
    write_suites(params, tmp_path, seed=2, count=1)
    model.write_bytes(b"weights 2")
    second = run_register(params, tmp_path)
    assert not second["promote"] and second["champion_version"] == "1" and second["champion_rescored"] is False
    refused = [r for r in second["reasons"] if "comparison refused" in r]
    assert refused and "different test images" in refused[0] and "re-scoring it failed" in refused[0], second["reasons"]
    assert any(r.startswith("ok   psnr/clean") for r in second["reasons"])
