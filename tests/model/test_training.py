"""Training steps end to end on a tiny workspace the tests build: prior, train, resume, torchrun."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import Params, parse_params
from pipeline.io import read_csv, read_json, save_npy, save_png
from pipeline.models.factory import CheckpointError, create_model, load_derain_model, load_prior
from pipeline.training.checkpoint import code_digest, load_state, save_state
from pipeline.training.prior import prior_scores, run_prior
from pipeline.training.train import run_train, training_loss

from tests.conftest import REPO, textured_photo

PATCH = 16


def tiny_raw(**train_changes) -> dict:
    """params.yaml with test-sized prior and train sections (16² patches, a 4-channel prior)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["curate"]["patch_size"] = PATCH
    raw["prior"] = {
        "model": {"type": "vq_autoencoder", "channels": 4, "latent_dim": 4, "codebook_size": 16, "downsample": 1, "res_blocks": 1},
        "iterations": 200, "batch_size": 8, "lr": 0.01, "restart_every": 10, "val_every": 100, "threads": 1,
    }
    raw["train"] = {
        "model": {"type": "prior_resnet", "blocks": 1},
        "rain": {"presets": ["small", "medium"], "probability": 0.9},
        "iterations": 6, "batch_size": 4, "crop_size": PATCH, "val_every": 3, "threads": 1, "lr": 0.001,
        "val_suites": ["val"], **train_changes,
    }
    return raw


def tiny_params(**train_changes) -> Params:
    return parse_params(tiny_raw(**train_changes))


def build_workspace(root: Path, params: Params) -> Path:
    """Curated patches and validation suites (as the curate/synthesize steps lay them out)."""
    from pipeline.synthesis.rain import synthesize_rain

    rng = np.random.default_rng(7)
    photos = [textured_photo(rng, 64, 64) for _ in range(4)]
    patches = np.stack([p[y : y + PATCH, x : x + PATCH] for p in photos for y in (0, 24, 48) for x in (0, 24, 48)])
    save_npy(root / params.paths.curated / "patches_train.npy", patches[:27])
    save_npy(root / params.paths.curated / "patches_prior.npy", patches[:27])
    save_npy(root / params.paths.curated / "patches_val.npy", patches[27:])
    for suite in params.train.val_suites:
        for index in range(2):
            clean = textured_photo(rng, 22, 26)  # not a multiple of the model's stride: padded
            rainy, layer, _ = synthesize_rain(clean, ["medium"], seed=100 + index)
            folder = root / params.paths.suites / suite
            save_png(folder / "clean" / f"img{index}.png", clean)
            save_png(folder / "rainy" / f"img{index}.png", rainy)
            save_png(folder / "rain" / f"img{index}.png", layer)
    return root


@pytest.fixture(scope="module")
def prior_workspace(tmp_path_factory) -> Path:
    """A workspace whose prior is trained (run_prior once for the whole module)."""
    root = build_workspace(tmp_path_factory.mktemp("ws"), tiny_params())
    run_prior(tiny_params(), root, show_progress=False)
    return root


@pytest.fixture
def workspace(prior_workspace: Path, tmp_path: Path) -> Path:
    """A private copy of the trained-prior workspace."""
    root = tmp_path / "ws"
    shutil.copytree(prior_workspace, root)
    return root


def test_tiny_prior_reconstructs_better_than_at_init(prior_workspace: Path):
    params = tiny_params()
    out = prior_workspace / params.paths.prior
    metrics = read_json(out / "metrics.json")
    torch.manual_seed(params.seed)
    untrained = create_model(params.prior.model).eval()
    val = np.load(prior_workspace / params.paths.curated / "patches_val.npy")
    assert metrics["recon_psnr"] > prior_scores(untrained, val, torch.device("cpu"))["recon_psnr"] + 3.0
    assert 0 < metrics["codebook_usage"] <= 1 and metrics["dead_codes"] == round(16 * (1 - metrics["codebook_usage"]))
    prior = load_prior(out / "prior.pt")
    assert prior_scores(prior, val, torch.device("cpu"))["recon_psnr"] == pytest.approx(metrics["recon_psnr"], abs=1e-4)
    assert [int(r["step"]) for r in read_csv(out / "log.csv")] == [100, 200]
    assert (out / "recon.png").is_file() and not (out / "checkpoint.pt").exists()


def test_prior_with_patch_discriminator_trains(tmp_path: Path):
    raw = tiny_raw()
    raw["prior"].update(iterations=20, val_every=10, discriminator_weight=0.1)
    params = parse_params(raw)
    build_workspace(tmp_path, params)
    metrics = run_prior(params, tmp_path, show_progress=False)
    assert np.isfinite(metrics["recon_psnr"]) and metrics["iterations"] == 20
    rows = read_csv(tmp_path / params.paths.prior / "log.csv")
    assert [int(r["step"]) for r in rows] == [10, 20] and all(np.isfinite(float(r["loss"])) for r in rows)
    assert load_prior(tmp_path / params.paths.prior / "prior.pt").spec == params.prior.model


@pytest.mark.parametrize("name", ["resnet_tiny", "prior_resnet_tiny", "masked_prior_tiny"])
def test_a_few_iterations_reduce_the_loss_on_a_fixed_batch(prior_workspace: Path, name: str):
    torch.manual_seed(0)
    prior = load_prior(prior_workspace / "build/prior/prior.pt")
    # No deadzone: a masked model would otherwise start as the identity, with nothing to optimise here.
    overrides = {"mask_deadzone": 0.0} if name.startswith("masked") else {}
    model = create_model(name, prior=prior, **overrides).train()
    patches = np.load(prior_workspace / "build/curated/patches_train.npy")[:4]
    clean = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255
    # A dense degradation far from the prior's reconstruction floor: the test is about the optimisation.
    rainy = 1.0 - clean
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(60):
        loss, terms = training_loss(model, rainy, clean, latent_weight=0.1)
        assert ("latent" in terms) == (name != "resnet_tiny")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert max(losses[-5:]) < 0.75 * losses[0]


def test_train_writes_a_self_contained_model_and_validation_log(workspace: Path):
    params = tiny_params()
    summary = run_train(params, workspace, show_progress=False)
    out = workspace / params.paths.model
    rows = read_csv(out / "log.csv")
    assert [int(r["step"]) for r in rows] == [3, 6]
    metrics = read_json(out / "metrics.json")
    assert params.train.val_suites == ["val"]  # validated on the val split's suite, never on a test suite
    assert not any(key.endswith(("/seen", "/unseen")) for key in metrics)
    for suite in params.train.val_suites:
        for key in ("psnr", "psnr_rain", "psnr_bg", "psnr_rain_input", "psnr_rain_gain"):
            assert np.isfinite(metrics[f"{key}/{suite}"]), key
        assert metrics[f"psnr_rain_gain/{suite}"] == pytest.approx(metrics[f"psnr_rain/{suite}"] - metrics[f"psnr_rain_input/{suite}"])
    assert summary["trainable_parameters"] < summary["parameters"]  # the prior is frozen inside
    shutil.rmtree(workspace / params.paths.prior)  # model.pt must not need the prior any more
    model = load_derain_model(out / "model.pt")
    x = torch.rand(1, 3, 9, 13)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("model", [{"type": "resnet", "channels": 4, "blocks": 1},
                                   {"type": "timm_unet", "encoder": "test_efficientnet", "decoder_channels": 4}])
def test_other_architectures_train(workspace: Path, model: dict):
    if model["type"] == "resnet":
        params = tiny_params(model=model, iterations=2, val_every=2, crop_size=16)
    else:  # timm_unet, stride 32: crops of 32² from 32² patches (params refuse crops larger than patches)
        params = parse_params({**tiny_raw(model=model, iterations=2, val_every=2, crop_size=32),
                               "curate": {**tiny_raw()["curate"], "patch_size": 32}})
        patches = np.tile(np.load(workspace / params.paths.curated / "patches_train.npy"), (1, 2, 2, 1))
        save_npy(workspace / params.paths.curated / "patches_train.npy", patches)
    run_train(params, workspace, show_progress=False)
    assert load_derain_model(workspace / params.paths.model / "model.pt").stride == (1 if model["type"] == "resnet" else 32)


def test_bad_training_inputs_are_named(workspace: Path):
    with pytest.raises(ValueError, match=r"train.crop_size=15 must be divisible by the prior_resnet model's stride 2"):
        run_train(tiny_params(crop_size=15), workspace, show_progress=False)
    with pytest.raises(ValueError, match=r"train.crop_size=32 is larger than the training patches \(16px"):
        run_train(tiny_params(crop_size=32), workspace, show_progress=False)
    raw = tiny_raw()
    raw["prior"]["model"]["latent_dim"] = 8  # params describe another prior than the trained one
    with pytest.raises(CheckpointError, match="latent shapes may not match; re-run the prior step"):
        run_train(parse_params(raw), workspace, show_progress=False)
    save_npy(workspace / "build/curated/patches_train.npy", np.zeros((4, PATCH, PATCH), np.float32))
    with pytest.raises(ValueError, match=r"patches_train.npy: expected uint8 patches"):
        run_train(tiny_params(), workspace, show_progress=False)
    shutil.rmtree(workspace / "build/prior")
    with pytest.raises(FileNotFoundError, match="no trained prior"):
        run_train(tiny_params(), workspace, show_progress=False)


def test_resume_discards_a_stale_checkpoint(tmp_path: Path, capsys):
    path = tmp_path / "checkpoint.pt"
    save_state(path, {"train": {"lr": 0.001, "batch_size": 4}, "seed": 1}, 3, {"weights": torch.ones(2)})
    state = load_state(path, {"train": {"lr": 0.001, "batch_size": 4}, "seed": 1})
    assert state["step"] == 3 and torch.equal(state["weights"], torch.ones(2))
    assert load_state(path, {"train": {"lr": 0.002, "batch_size": 4}, "seed": 1}) is None and not path.exists()
    assert re.search(r"checkpoint.pt: discarded a stale training checkpoint \(written with other settings, inputs or code: "
                     r"train.lr: 0.001 in the checkpoint, 0.002 now\); starting from step 0", capsys.readouterr().err)
    path.write_bytes(b"garbage")
    assert load_state(path, {}) is None and not path.exists()
    assert "discarded a stale training checkpoint (unreadable" in capsys.readouterr().err


def test_train_starts_over_from_a_stale_checkpoint_instead_of_failing(workspace: Path, capsys):
    """A checkpoint left by a run of other settings (e.g. beside outputs DVC restored from its run
    cache) is discarded: the stage runs from step 0 instead of failing or resuming it."""
    params = tiny_params()
    checkpoint = workspace / params.paths.model / "checkpoint.pt"
    save_state(checkpoint, {"train": {"lr": 0.5}, "seed": 1, "code": "older"}, 1, {"rows": []})
    summary = run_train(params, workspace, show_progress=False)
    assert summary["resumed_from_step"] == 0 and not checkpoint.exists()
    assert "discarded a stale training checkpoint (written with other settings, inputs or code: code: 'older'" in capsys.readouterr().err


def test_code_digest_follows_the_code(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code")
    before = code_digest(tmp_path / "pkg")
    (tmp_path / "pkg" / "notes.txt").write_text("changed, still not code")
    assert code_digest(tmp_path / "pkg") == before
    (tmp_path / "pkg" / "a.py").write_text("x = 2\n")
    assert code_digest(tmp_path / "pkg") != before


def _cli(args: list[str], root: Path, params_file: Path) -> list[str]:
    return [*args, "-m", "pipeline", "train", "--params", str(params_file), "--root", str(root)]


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(workspace: Path, tmp_path: Path):
    raw = tiny_raw(iterations=200, val_every=10)
    params = parse_params(raw)
    reference = tmp_path / "reference"
    shutil.copytree(workspace, reference)
    run_train(params, reference, show_progress=False)

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    checkpoint = workspace / params.paths.model / "checkpoint.pt"
    process = subprocess.Popen(_cli([sys.executable], workspace, params_file), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # kill -9: no cleanup runs
    process.wait()
    assert checkpoint.exists() and not (workspace / params.paths.model / "model.pt").exists()

    summary = run_train(params, workspace, show_progress=False)
    assert summary["resumed_from_step"] > 0
    resumed = torch.load(workspace / params.paths.model / "model.pt", weights_only=True)["state_dict"]
    expected = torch.load(reference / params.paths.model / "model.pt", weights_only=True)["state_dict"]
    assert resumed.keys() == expected.keys()
    for key in expected:
        assert torch.allclose(resumed[key], expected[key], atol=1e-6), key
    assert read_csv(workspace / params.paths.model / "log.csv") == read_csv(reference / params.paths.model / "log.csv")


@pytest.mark.slow
def test_torchrun_two_processes_train_and_log_once(workspace: Path, tmp_path: Path):
    raw = tiny_raw(iterations=4, val_every=2)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(raw))
    torchrun = Path(sys.executable).parent / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(_cli([str(torchrun), "--standalone", "--nproc_per_node", "2"], workspace, params_file),
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = workspace / "build/model"
    assert [int(r["step"]) for r in read_csv(out / "log.csv")] == [2, 4]  # one row per interval, not per process
    assert read_json(out / "metrics.json")["processes"] == 2
    assert result.stdout.count("rank 0 writes the outputs") == 1  # rank 1 reports that it wrote nothing
    assert load_derain_model(out / "model.pt")(torch.rand(1, 3, 8, 8)).shape == (1, 3, 8, 8)
