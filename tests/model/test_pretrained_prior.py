"""A user's own pre-trained diffusers autoencoder as the content prior (`pretrained_autoencoder`):
config errors, the adapter, the prior step, prior_resnet on it, training, and the saved models
staying self-contained once the user's directory is gone. The autoencoders are tiny, randomly
initialised ones saved here with `save_pretrained`."""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ParamsError, PretrainedAutoencoderSpec, parse_params
from pipeline.io import read_csv, read_json
from pipeline.models.factory import create_model, load_derain_model, load_prior
from pipeline.models.pretrained_prior import WEIGHTS_FILE, PretrainedAutoencoderPrior, load_pretrained_prior
from pipeline.training.prior import prior_scores, run_prior
from pipeline.training.train import run_train

from tests.model.test_training import build_workspace, tiny_raw

KINDS = ("autoencoder_kl", "autoencoder_tiny")


def save_tiny_autoencoder(kind: str, folder: Path) -> Path:
    """A randomly initialised diffusers autoencoder (stride 2, 4 latent channels) saved to `folder`."""
    from diffusers import AutoencoderKL, AutoencoderTiny

    torch.manual_seed(0)
    if kind == "autoencoder_kl":
        model = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                              up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    else:
        model = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                                num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4)
    model.save_pretrained(folder)
    return folder


def spec(kind: str, path: Path | str) -> PretrainedAutoencoderSpec:
    return PretrainedAutoencoderSpec(type="pretrained_autoencoder", path=str(path), kind=kind)


def pretrained_raw(kind: str, path: Path | str) -> dict:
    """Test-sized params (tests/model/test_training.py) with the pretrained prior; 2 training iterations."""
    raw = tiny_raw(iterations=2, val_every=2, batch_size=2)
    raw["prior"] = {"model": {"type": "pretrained_autoencoder", "path": str(path), "kind": kind}, "threads": 1}
    return raw


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("autoencoders")
    return {kind: save_tiny_autoencoder(kind, base / kind) for kind in KINDS}


@pytest.fixture(scope="module", params=KINDS)
def adopted(request, tmp_path_factory) -> dict:
    """A workspace after the prior step adopted the user's autoencoder, which is then DELETED:
    everything downstream must work from build/prior alone."""
    base = tmp_path_factory.mktemp(f"adopted-{request.param}")
    user_dir = save_tiny_autoencoder(request.param, base / "users-vae")
    weights_sha256 = hashlib.sha256((user_dir / WEIGHTS_FILE).read_bytes()).hexdigest()
    original = load_pretrained_prior(spec(request.param, user_dir), base)
    params = parse_params(pretrained_raw(request.param, "users-vae"))  # relative to the workspace root
    root = build_workspace(base, params)
    summary = run_prior(params, root, show_progress=False)
    shutil.rmtree(user_dir)
    return {"kind": request.param, "root": root, "params": params, "summary": summary, "original": original,
            "weights_sha256": weights_sha256, "user_dir": user_dir}


def test_params_take_a_pretrained_prior_and_name_bad_keys():
    params = parse_params(pretrained_raw("autoencoder_tiny", "vae"))
    assert params.prior.model == spec("autoencoder_tiny", "vae")
    bad = [({"scale": 2}, r"prior\.model\.pretrained_autoencoder\.scale: unknown key"),
           ({"kind": "vqgan"}, r"prior\.model\.pretrained_autoencoder\.kind: .*'autoencoder_kl' or 'autoencoder_tiny'"),
           ({"path": ""}, r"prior\.model\.pretrained_autoencoder\.path")]
    for change, message in bad:
        raw = pretrained_raw("autoencoder_kl", "vae")
        raw["prior"]["model"].update(change)
        with pytest.raises(ParamsError, match=message):
            parse_params(raw)


def test_directories_that_are_not_the_named_autoencoder_are_refused(tmp_path: Path, saved: dict[str, Path]):
    kl = saved["autoencoder_kl"]
    (tmp_path / "file.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    pickled = shutil.copytree(kl, tmp_path / "pickled")
    (pickled / WEIGHTS_FILE).rename(pickled / "diffusion_pytorch_model.bin")
    cases = [
        (spec("autoencoder_kl", tmp_path / "missing"), "does not exist"),
        (spec("autoencoder_kl", tmp_path / "file.safetensors"), "is a file, not a directory"),
        (spec("autoencoder_kl", tmp_path / "empty"), "no config.json, so it is not a diffusers model directory"),
        (spec("autoencoder_tiny", kl), "declares 'AutoencoderKL', but prior.model.kind 'autoencoder_tiny' needs 'AutoencoderTiny'"),
        (spec("autoencoder_kl", pickled), "safetensors only; pickled .bin files are refused"),
    ]
    for bad, message in cases:
        with pytest.raises(ParamsError, match="^prior.model.path: ") as error:
            load_pretrained_prior(bad, tmp_path)
        assert message in str(error.value)
    # A relative path is under the workspace root.
    assert load_pretrained_prior(spec("autoencoder_kl", kl.name), kl.parent).stride == 2


@pytest.mark.parametrize("kind", KINDS)
def test_encode_decode_shapes_range_and_frozen(saved: dict[str, Path], kind: str):
    prior = load_pretrained_prior(spec(kind, saved[kind]), "/")
    x = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    latent = prior.encode(x)
    assert latent.shape == (2, 4, 8, 12) and latent.dtype == torch.float32
    with torch.no_grad():  # the latent is the diffusers one, from [-1, 1] input, scaled by the config
        encoded = prior.autoencoder.encode(x * 2 - 1)
    raw = encoded.latent_dist.mean if kind == "autoencoder_kl" else encoded.latents
    assert torch.allclose(latent, raw * prior.autoencoder.config.scaling_factor, atol=1e-6)
    far = (latent * 20).requires_grad_(True)  # decodes far outside [0, 1] before the clamp
    image = prior.decode(far)
    assert image.shape == x.shape and image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    image.sum().backward()
    assert far.grad.abs().sum() > 0  # the clamp passes gradients straight through
    assert not prior.training and not any(p.requires_grad for p in prior.parameters())
    assert prior.quantizer is None
    with pytest.raises(ValueError, match="sides divisible by 2"):
        prior.encode(torch.rand(1, 3, 15, 16))


def test_prior_step_measures_and_stores_a_self_contained_prior(adopted: dict):
    out = adopted["root"] / adopted["params"].paths.prior
    metrics = read_json(out / "metrics.json")
    assert 0 < metrics["recon_psnr"] < 100 and metrics["iterations"] == 0 and metrics["val_patches"] == 9
    assert metrics["codebook_usage"] is None and metrics["dead_codes"] is None  # no codebook: not applicable
    source = metrics["source"]
    assert source["sha256"] == adopted["weights_sha256"] and source["kind"] == adopted["kind"]
    assert source["path"] == str(adopted["user_dir"].resolve())
    assert [float(r["val_recon_psnr"]) for r in read_csv(out / "log.csv")] == pytest.approx([metrics["recon_psnr"]], abs=1e-4)
    assert (out / "recon.png").is_file()
    # prior.pt reloads without the (deleted) user's directory, to the same model.
    assert not adopted["user_dir"].exists()
    prior = load_prior(out / "prior.pt")
    assert isinstance(prior, PretrainedAutoencoderPrior) and prior.spec == adopted["params"].prior.model
    val = np.load(adopted["root"] / adopted["params"].paths.curated / "patches_val.npy")
    assert prior_scores(prior, val, torch.device("cpu"))["recon_psnr"] == pytest.approx(metrics["recon_psnr"], abs=1e-4)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(prior(x)[0], adopted["original"](x)[0])


@pytest.mark.parametrize("kind", KINDS)
def test_prior_resnet_renders_its_latent_through_the_frozen_decoder(saved: dict[str, Path], kind: str):
    prior = load_pretrained_prior(spec(kind, saved[kind]), "/")
    frozen = {k: v.clone() for k, v in prior.state_dict().items()}
    torch.manual_seed(1)
    model = create_model("prior_resnet_tiny", prior=prior).train()
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(2))  # odd: padded to the stride
    out, latent = model(x, return_latent=True)
    assert out.shape == x.shape and latent.shape == (2, 4, 7, 9)
    torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2).zero_grad()
    (out.square().mean() + latent.square().mean()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in model.encoder.refine.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.autoencoder.parameters())
    assert all(p.grad is None for p in prior.parameters()) and not prior.training
    assert all(torch.equal(frozen[k], v) for k, v in prior.state_dict().items())
    model.eval()
    with torch.no_grad():
        rendered, latent = model(x * 3 - 1, return_latent=True)  # out-of-range input: output still in [0, 1]
        assert rendered.min() >= 0 and rendered.max() <= 1
        even = x[..., :12, :16]  # a multiple of the stride: no padding
        # No codebook: the output is the decoder's rendering of the predicted latent, and before
        # training (identity refinement, the prior's encoder weights) it is the prior's reconstruction.
        assert torch.allclose(model(even), prior(even)[0], atol=1e-5)
    fresh = create_model({"type": "prior_resnet", "blocks": 1, "init_from_prior": False}, prior=prior)
    first = next(fresh.encoder.autoencoder.encoder.parameters())
    assert first.requires_grad and not torch.equal(first, next(prior.autoencoder.encoder.parameters()))


def test_training_registration_and_serving_need_only_build_prior(adopted: dict, tmp_path: Path):
    import pandas as pd
    from mlflow.pyfunc import PythonModelContext

    from pipeline.lineage import lineage_tags
    from pipeline.registry.register import pip_requirements
    from pipeline.serving.codec import IMAGE_COLUMN, decode_image
    from pipeline.serving.pyfunc import CHECKPOINT_ARTIFACT, DerainPyfunc, PriorPyfunc

    root = shutil.copytree(adopted["root"], tmp_path / "ws")
    params = adopted["params"]
    summary = run_train(params, root, show_progress=False)
    rows = read_csv(root / params.paths.model / "log.csv")
    assert summary["iterations"] == 2 and all(np.isfinite(float(r["latent"])) for r in rows)
    model = load_derain_model(root / params.paths.model / "model.pt")
    assert isinstance(model.prior, PretrainedAutoencoderPrior)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 11, 14))
    assert out.shape == (1, 3, 11, 14) and out.min() >= 0 and out.max() <= 1

    tags = lineage_tags(params, root)
    assert tags["prior_source_sha256"] == adopted["weights_sha256"]
    assert tags["prior_source_path"] == str(adopted["user_dir"].resolve())
    assert any(r.startswith("diffusers") for r in pip_requirements(params))

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8)).save(buffer, format="PNG")
    request = {IMAGE_COLUMN: [base64.b64encode(buffer.getvalue()).decode()]}
    for served, artifact in ((PriorPyfunc(), params.paths.prior + "/prior.pt"), (DerainPyfunc(), params.paths.model + "/model.pt")):
        served.load_context(PythonModelContext({CHECKPOINT_ARTIFACT: str(root / artifact)}, None))
        answer = served.predict(None, pd.DataFrame(request))
        assert decode_image(answer[IMAGE_COLUMN][0]).shape == (9, 13, 3)
