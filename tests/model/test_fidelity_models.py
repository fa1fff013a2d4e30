"""The fidelity paths: the rain-mask composition, CodeFormer-style fusion and the classical baseline.

Behaviour the design guarantees: where the mask is 0 the input comes back exactly; fusion at
fidelity 0 (and at initialisation) is the pure prior rendering; the classical filter leaves
every non-outlier pixel as it was. A tiny masked model trained for a few dozen steps already
returns a dry photo nearly untouched while it marks rain.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models.factory import create_model
from pipeline.training.train import mask_target, training_loss


def tiny_prior(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("vq_autoencoder_tiny").eval()


def images(n: int = 2, size: int = 24, seed: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_mask_zero_returns_the_input_exactly_and_mask_one_the_prior_branch():
    model = create_model("masked_prior_tiny", prior=tiny_prior()).eval()
    x = images()
    with torch.no_grad():
        model.mask_head.to_logits.bias.fill_(-1e4)  # m = 0 everywhere
        assert torch.equal(model(x), x)
        model.mask_head.to_logits.bias.fill_(1e4)  # m = 1 everywhere
        assert torch.allclose(model(x), model.branch(x), atol=1e-6)


def test_subtract_composition_removes_the_rain_light_and_uses_the_prior_only_where_saturated():
    """subtract: with the mask on, a pixel that shows through comes back as x - a (exact for
    additive rain), a pixel clipped to white comes back as the prior branch's drawing, and with
    the mask off the input comes back bit for bit."""
    from pipeline.models.masked import saturation

    model = create_model("masked_prior_tiny", prior=tiny_prior(), composition="subtract").eval()
    x = images() * 0.8  # nothing saturated
    x[:, :, :4, :4] = 1.0  # a white corner: the rain clipped it
    light = 0.25
    with torch.no_grad():
        model.mask_head.to_logits.bias.copy_(torch.tensor([1e4, float(np.log(light / (1 - light)))]))
        out, drawn = model(x), model.branch(x)
        assert torch.allclose(out[:, :, 8:, 8:], (x[:, :, 8:, 8:] - light).clamp(min=0), atol=1e-6)
        assert torch.allclose(out[:, :, :4, :4], drawn[:, :, :4, :4], atol=1e-6)
        model.mask_head.to_logits.bias[0] = -1e4  # m = 0
        assert torch.equal(model(x), x)
    assert saturation(x)[:, :, :4, :4].min() == 1 and saturation(x)[:, :, 8:, 8:].max() == 0


def test_masked_model_starts_near_the_identity():
    model = create_model("masked_fused_tiny", prior=tiny_prior()).eval()
    x = images()
    with torch.no_grad():
        error = (model(x) - x).abs().max().item()
        mask = model.rain_mask(x)
    assert mask.shape == (2, 1, 24, 24) and mask.max() < 0.02
    assert error < 0.02  # the branch's error, scaled by m < 0.02


def test_fusion_at_init_and_at_fidelity_zero_is_the_pure_prior_rendering():
    prior = tiny_prior()
    torch.manual_seed(5)
    fused = create_model("fused_prior_tiny", prior=prior).eval()
    pure = create_model({"type": "prior_resnet", "blocks": 1}, prior=prior).eval()
    pure.encoder.load_state_dict(fused.encoder.state_dict())
    x = images()
    with torch.no_grad():
        assert torch.allclose(fused(x), pure(x), atol=1e-6)  # the fusion layer starts at zero
        torch.nn.init.normal_(fused.fuse[-1].weight, std=0.5)
        changed = fused(x)
        fused.fidelity = 0.0
        assert torch.allclose(fused(x), pure(x), atol=1e-6)
    assert not torch.allclose(changed, pure(x), atol=1e-3)


def test_fusion_needs_a_vq_prior():
    with pytest.raises(ValueError, match="renders through a trained prior"):
        create_model("fused_prior_tiny")


def test_mask_loss_only_for_masked_models():
    prior = tiny_prior()
    clean = images(seed=4)
    layer = torch.zeros(2, 1, 24, 24)
    layer[:, :, 5:7, :] = 200.0
    rainy = (clean + layer / 255.0).clamp(0, 1)
    masked = create_model("masked_prior_tiny", prior=prior).train()
    _, terms = training_loss(masked, rainy, clean, 0.1, layer, mask_weight=0.1, threshold=50)
    assert {"l1", "latent", "mask"} <= set(terms)
    plain = create_model("resnet_tiny").train()
    _, terms = training_loss(plain, rainy, clean, 0.1, layer, mask_weight=0.1, threshold=50)
    assert set(terms) == {"l1"}
    target = mask_target(layer, 50)
    assert target.max() == 1 and target[:, :, 10:].max() == 0


def test_classical_baseline_removes_a_bright_line_and_keeps_the_rest():
    model = create_model({"type": "classical_median"}).eval()
    x = 0.3 + torch.linspace(0, 0.2, 32).expand(1, 3, 32, 32).clone()  # a smooth ramp: no outlier
    rainy = x.clone()
    rainy[:, :, :, 16] = 0.9  # a one-pixel bright streak
    with torch.no_grad():
        out = model(rainy)
        untouched = model(x)
    assert torch.equal(untouched, x)
    assert (out[:, :, :, 16] - x[:, :, :, 16]).abs().max() < 0.02
    assert torch.equal(out[:, :, :, :14], x[:, :, :, :14])


@pytest.mark.slow
def test_a_briefly_trained_masked_model_leaves_a_dry_photo_alone():
    """Behavioural: 200 steps on synthetic photos with an untrained tiny prior; the dry photo
    comes back above 30 dB while the mask lights up on rain (a floor on psnr/clean that only the
    composition makes reachable: the tiny prior alone draws at ~12 dB)."""
    from pipeline.synthesis.rain import rainify_batch
    from pipeline.evaluation.metrics import batch_psnr
    from tests.conftest import textured_photo

    rng = np.random.default_rng(0)
    photos = torch.from_numpy(np.stack([textured_photo(rng, 48, 48) for _ in range(16)])).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    model = create_model("masked_prior_tiny", prior=tiny_prior(), mask_channels=8).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    generator = torch.Generator().manual_seed(1)
    for step in range(200):
        clean = photos[torch.randint(0, 16, (8,), generator=generator)]
        rainy, layer = rainify_batch(clean, ["small", "medium"], 0.9, generator)
        loss, _ = training_loss(model, rainy, clean, 0.1, layer, mask_weight=0.5, threshold=50)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    dry = photos[:4]
    rainy, layer = rainify_batch(dry, ["medium"], 1.0, torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert batch_psnr(model(dry), dry).min() >= 30.0
        mask = model.rain_mask(rainy)
    streaks = layer > 50
    assert mask[streaks].mean() > 2 * mask[~streaks].mean()
