"""Architectures, the factory and the checkpoint loaders: shapes, ranges, gradients, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.factory import (
    CheckpointError,
    create_model,
    derain_checkpoint,
    load_derain_model,
    load_prior,
    prior_checkpoint,
)
from pipeline.models.registry import register_architecture, register_variant


def tiny_prior(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("vq_autoencoder_tiny")


def tiny_model(name: str):
    torch.manual_seed(1)
    if name.startswith("masked"):
        # A masked model starts with every pixel inside its deadzone (the output is the input, no
        # gradient through the composition); without the deadzone the generic checks apply.
        return create_model(name, prior=tiny_prior(), mask_deadzone=0.0)
    return create_model(name, prior=tiny_prior()) if name in PRIOR_VARIANTS else create_model(name)


PRIOR_VARIANTS = ["prior_resnet_tiny", "masked_prior_tiny", "fused_prior_tiny", "masked_fused_tiny"]
DERAIN_VARIANTS = ["resnet_tiny", "timm_unet_tiny", *PRIOR_VARIANTS]


@pytest.mark.parametrize("name", DERAIN_VARIANTS)
@pytest.mark.parametrize("size", [(13, 17), (5, 7), (32, 33)])
def test_forward_backward_any_size(name: str, size: tuple[int, int]):
    model = tiny_model(name).train()
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    y.square().mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    model.eval()
    with torch.no_grad():
        out = model(x * 3 - 1)  # out-of-range input still gives an output in [0, 1]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_prior_resnet_output_is_a_decoder_rendering_and_prior_stays_frozen():
    prior = tiny_prior()
    frozen = {k: v.clone() for k, v in prior.state_dict().items()}
    model = create_model("prior_resnet_tiny", prior=prior).train()
    x = torch.rand(3, 3, 12, 10, generator=torch.Generator().manual_seed(3)) * 4 - 2  # far outside [0, 1]
    out, latent = model(x, return_latent=True)
    # The output is exactly what the decoder draws from codebook entries: sigmoid range (0, 1).
    codes = prior.quantizer.nearest(latent.detach())
    assert torch.allclose(out, prior.decode(prior.quantizer.lookup(codes)), atol=1e-6)
    assert out.min() > 0 and out.max() < 1
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out.mean().backward()
    optimizer.step()
    assert all(p.grad is None for p in prior.parameters())
    assert all(torch.equal(frozen[k], v) for k, v in prior.state_dict().items())
    assert not prior.training  # stays in eval mode inside a model in train mode


def test_prior_resnet_starts_from_the_prior_reconstruction():
    prior = tiny_prior()
    model = create_model("prior_resnet_tiny", prior=prior).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(model(x), prior(x)[0], atol=1e-6)


def test_vq_autoencoder_shapes_and_straight_through():
    prior = tiny_prior().train()
    x = torch.rand(2, 3, 8, 12)
    recon, quantized = prior(x)
    assert recon.shape == x.shape and quantized.codes.shape == (2, 4, 6)
    assert quantized.codes.max() < prior.quantizer.size
    (recon.mean() + quantized.codebook_loss + quantized.commitment_loss).backward()
    assert prior.encoder.to_latent.weight.grad.abs().sum() > 0  # gradient passed through quantization
    assert prior.quantizer.codebook.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="divisible by 2"):
        prior(torch.rand(1, 3, 7, 8))


def test_unknown_type_and_variant_list_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model type 'transformer'.*prior_resnet, resnet, timm_unet, vq_autoencoder"):
        create_model({"type": "transformer"})
    with pytest.raises(ValueError, match=r"unknown model 'resnet_huge'.*resnet_tiny"):
        create_model("resnet_huge")
    with pytest.raises(ValueError, match=r"invalid resnet spec: channels"):
        create_model("resnet_tiny", channels=0)


def test_overrides_and_registration_refuses_duplicates():
    model = create_model("resnet_tiny", channels=6)
    assert model.head[0].out_channels == 6
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("resnet", dict)(lambda spec: None)
    with pytest.raises(ValueError, match="already registered"):
        register_variant("resnet_tiny", {"type": "resnet"})


def test_prior_resnet_needs_a_prior():
    with pytest.raises(ValueError, match="pass prior=load_prior"):
        create_model("prior_resnet_tiny")


def test_unknown_timm_encoder_suggests_names():
    with pytest.raises(ValueError, match=r"'resnet181' is not a timm model.*resnet18"):
        create_model("timm_unet_tiny", encoder="resnet181")


def test_timm_encoder_weights_come_from_a_local_file(tmp_path: Path):
    import timm

    torch.manual_seed(5)
    source = timm.create_model("test_efficientnet", pretrained=False)
    weights = tmp_path / "encoder.pth"
    torch.save(source.state_dict(), weights)
    model = create_model("timm_unet_tiny", weights="encoder.pth", root=tmp_path)
    stem = model.encoder.conv_stem.weight
    assert torch.equal(stem, source.conv_stem.weight)
    with pytest.raises(FileNotFoundError, match=r"train.model.weights: .*missing.pth"):
        create_model("timm_unet_tiny", weights="missing.pth", root=tmp_path)


@pytest.mark.parametrize("name", DERAIN_VARIANTS)
def test_saved_model_loads_self_contained(tmp_path: Path, name: str):
    model = tiny_model(name).eval()
    prior_spec = model.prior.spec if name in PRIOR_VARIANTS else None
    from pipeline.models.factory import parse_spec

    path = tmp_path / "model.pt"
    overrides = {"mask_deadzone": 0.0} if name.startswith("masked") else {}  # as tiny_model builds it
    torch.save(derain_checkpoint(parse_spec(name, **overrides), model.state_dict(), prior_spec), path)
    loaded = load_derain_model(path)
    assert not loaded.training
    x = torch.rand(1, 3, 19, 11)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)


def test_prior_round_trip(tmp_path: Path):
    prior = tiny_prior().eval()
    torch.save(prior_checkpoint(prior), tmp_path / "prior.pt")
    loaded = load_prior(tmp_path / "prior.pt")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(loaded(x)[0], prior(x)[0])


def test_corrupt_foreign_and_mismatched_checkpoints(tmp_path: Path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable raincheck checkpoint"):
        load_derain_model(corrupt)
    pickled = tmp_path / "pickled.pt"
    torch.save(tiny_model("resnet_tiny"), pickled)  # a whole pickled module: weights_only refuses it
    with pytest.raises(CheckpointError, match="pickled.pt: not a readable"):
        load_derain_model(pickled)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="no 'format' entry"):
        load_derain_model(foreign)
    prior_file = tmp_path / "prior.pt"
    torch.save(prior_checkpoint(tiny_prior()), prior_file)
    with pytest.raises(CheckpointError, match="is a 'raincheck-prior/1' checkpoint"):
        load_derain_model(prior_file)
    # A prior whose latent does not match the restoration encoder stored beside it.
    model = tiny_model("prior_resnet_tiny")
    from pipeline.models.factory import parse_spec

    other_prior = parse_spec("vq_autoencoder_tiny", latent_dim=6)
    mismatched = tmp_path / "mismatch.pt"
    torch.save(derain_checkpoint(parse_spec("prior_resnet_tiny"), model.state_dict(), other_prior), mismatched)
    with pytest.raises(CheckpointError, match="do not match the spec"):
        load_derain_model(mismatched)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_derain_model(tmp_path / "absent.pt")


def test_quantizer_nearest_codes_in_chunks_equal_one_matrix():
    from pipeline.models.vq import _NEAREST_CHUNK, VectorQuantizer

    torch.manual_seed(0)
    quantizer = VectorQuantizer(64, 8)
    z = torch.nn.functional.normalize(torch.randn(2, 8, 50, 60), dim=1)  # 6000 latents: two chunks
    assert 2 * 50 * 60 > _NEAREST_CHUNK
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    expected = (flat @ quantizer.unit_codebook().t()).argmax(dim=1).view(2, 50, 60)
    assert torch.equal(quantizer.nearest(z), expected)
    with torch.no_grad():  # inference: no loss terms computed
        assert float(quantizer(z).commitment_loss) == 0.0
    assert float(quantizer(z).commitment_loss) > 0.0


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_replicate_pad_and_conv_equal_torchs(channels_last):
    import torch.nn.functional as F

    from pipeline.models.resnet import conv3x3, replicate_pad1

    torch.manual_seed(1)
    x = torch.rand(2, 5, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    padded = replicate_pad1(x)
    assert torch.equal(padded, F.pad(x, (1, 1, 1, 1), mode="replicate"))
    assert padded.is_contiguous(memory_format=torch.channels_last) == channels_last
    for stride in (1, 2):
        conv = conv3x3(5, 4, stride=stride)
        with torch.no_grad():
            fast = conv(x)  # inference: replicate_pad1
        assert torch.allclose(fast, conv(x), atol=1e-6)  # with gradients: torch's own pad


def test_codebook_gradient_is_the_same_on_every_run():
    # Same data and params must give the same prior: the codebook lookup's backward has to add
    # its contributions in a fixed order, even with several CPU threads.
    from pipeline.models.vq import VectorQuantizer

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        quantizer = VectorQuantizer(256, 32)
        codes = torch.randint(0, 256, (16, 32, 32))
        upstream = torch.randn(16, 32, 32, 32)
        grads = []
        for _ in range(5):
            quantizer.zero_grad()
            (quantizer.lookup(codes) * upstream).sum().backward()
            grads.append(quantizer.codebook.grad.clone())
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(grads[0], grad) for grad in grads[1:])
