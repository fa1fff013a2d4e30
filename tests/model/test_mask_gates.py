"""The mask gates (pipeline.models.gates): what the composition may re-draw, measured on the input.

Guarantees: with the streak gate on, a bright structure along the image's streaks stays open
while a bright dot (no orientation) and a bright line across the streaks are closed, so the
masked model returns those pixels bit for bit; the coarse mask pass (`mask_scales`) can only add
rain, and only at inference; the shower check returns an image whose marks cover one object, not
the frame, bit for bit, and only at inference.
"""

from __future__ import annotations

import re

import pytest
import torch

from pipeline.config import ParamsError, parse_params, read_params
from pipeline.models.factory import create_model
from pipeline.models.gates import bright_excess, shower_spread, streak_alignment


def shower(size: int = 96) -> torch.Tensor:
    """(1, 3, size, size) grey 0.3 with six vertical 1-px streaks of light 0.6, one horizontal 1-px
    line across them (rows 70, columns 60..90) and a 3x3 bright dot at (20, 80)."""
    x = torch.full((1, 3, size, size), 0.3)
    for column in range(8, 56, 8):
        x[:, :, 10:60, column] = 0.9
    x[:, :, 70, 60:90] = 0.9
    x[:, :, 19:22, 79:82] = 0.9
    return x


def test_streaks_along_the_shower_stay_open_and_a_dot_or_a_crossing_line_closes():
    excess = bright_excess(shower(), 11)
    gate = streak_alignment(excess, open_at=0.4)
    assert gate.shape == (1, 1, 96, 96) and 0 <= gate.min() and gate.max() <= 1
    assert gate[0, 0, 20:50, 8:56:8].min() > 0.99  # the middle of every vertical streak
    assert gate[0, 0, 70, 65:85].max() < 0.01  # the horizontal line: across the shower
    assert gate[0, 0, 20, 80] < 0.01  # the dot's centre: no orientation


def test_the_masked_model_keeps_what_the_streak_gate_closes_bit_for_bit():
    torch.manual_seed(0)
    prior = create_model("vq_autoencoder_tiny").eval()
    gated = create_model("masked_prior_tiny", prior=prior, bright_gate=11, streak_gate=0.4).eval()
    ungated = create_model("masked_prior_tiny", prior=prior, bright_gate=11).eval()
    x = shower()
    with torch.no_grad():
        for model in (gated, ungated):
            model.mask_head.to_logits.bias.fill_(1e4)  # the head marks every pixel as rain
        out, ungated_mask = gated(x), ungated.rain_mask(x)
    assert torch.equal(out[:, :, 70, 65:85], x[:, :, 70, 65:85])  # the crossing line comes back as it was
    assert torch.equal(out[:, :, 20, 80], x[:, :, 20, 80])
    assert not torch.equal(out[:, :, 20:50, 8], x[:, :, 20:50, 8])  # a streak is re-drawn
    assert ungated_mask[0, 0, 70, 65:85].min() > 0.99  # the bright gate alone would have re-drawn the line


def test_the_coarse_mask_pass_only_adds_rain_and_only_at_inference():
    """mask_scales [1, 2]: at inference the mask is the larger of the full- and half-size passes
    (never smaller than the full-size mask alone); in training the full-size pass alone."""
    torch.manual_seed(0)
    prior = create_model("vq_autoencoder_tiny").eval()
    single = create_model("masked_prior_tiny", prior=prior, mask_deadzone=0.0)
    both = create_model("masked_prior_tiny", prior=prior, mask_deadzone=0.0, mask_scales=[1, 2])
    both.load_state_dict(single.state_dict())
    with torch.no_grad():
        for weights in single.mask_head.parameters():
            weights.normal_(0, 0.5)  # a head with spatially varying answers
        both.mask_head.load_state_dict(single.mask_head.state_dict())
        x = shower()
        fine, coarse = single.eval().rain_mask(x), both.eval().rain_mask(x)
        assert (coarse >= fine).all() and (coarse > fine + 1e-3).any()
        assert torch.equal(both.train().rain_mask(x), single.train().rain_mask(x))


@pytest.mark.parametrize("scales", [[2], [1, 1], [1, 4, 2]])
def test_mask_scales_must_start_at_full_resolution_and_increase(scales):
    raw = read_params("params.yaml")
    raw["train"]["model"]["mask_scales"] = scales
    with pytest.raises(ParamsError, match=rf"train\.model.*mask_scales {re.escape(str(scales))}: start with 1"):
        parse_params(raw, "params.yaml")


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 5, 3), (3, 40, 3)])
def test_images_smaller_than_the_gates_windows_come_back_whole(shape):
    """The gates' windows (11 px top-hat, 19-px structure-tensor blur) replicate the edges: a
    request smaller than them is derained, not refused with a padding error."""
    from pipeline.inference import derain_array

    torch.manual_seed(0)
    model = create_model("masked_prior_tiny", prior=create_model("vq_autoencoder_tiny").eval(), bright_gate=11,
                         streak_gate=0.4, shower_check=0.45).eval()
    image = (torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8).numpy()
    assert derain_array(model, image, tile=1024).shape == shape


@pytest.mark.parametrize("window", [1, 3, 7, 11, 21, 31])
def test_the_opening_equals_the_separable_min_max_pooling_it_replaces(window):
    """`opening` takes running maxima by doubling spans; the values must be max_pool2d's exactly."""
    import torch.nn.functional as F

    from pipeline.models.gates import opening

    def pooled(values: torch.Tensor, sign: float) -> torch.Tensor:
        pad = window // 2
        values = F.max_pool2d(F.pad(values * sign, (pad, pad, 0, 0), mode="replicate"), (1, window), stride=1)
        return F.max_pool2d(F.pad(values, (0, 0, pad, pad), mode="replicate"), (window, 1), stride=1) * sign

    image = torch.rand((2, 3, 29, 40), generator=torch.Generator().manual_seed(window))
    assert torch.equal(opening(image, window), pooled(pooled(image, -1.0), 1.0))
    assert torch.equal(opening(image[:, :, :1, :3], window), pooled(pooled(image[:, :, :1, :3], -1.0), 1.0))


def downpour(size: int = 96) -> torch.Tensor:
    """(1, 3, size, size) grey 0.3 with vertical 1-px streaks of light 0.6 every 6 px over the whole
    frame, each 20 px long, staggered: rain that falls everywhere."""
    x = torch.full((1, 3, size, size), 0.3)
    for index, column in enumerate(range(2, size, 6)):
        for top in range((index * 7) % 24, size - 20, 24):
            x[:, :, top : top + 20, column] = 0.9
    return x


def test_shower_spread_is_high_for_rain_over_the_frame_and_low_for_marks_on_one_object():
    over_the_frame = (downpour().mean(dim=1, keepdim=True) > 0.5).float()
    on_one_object = torch.zeros(1, 1, 96, 96)
    on_one_object[:, :, 10:60, 8:56] = 1.0
    spread = shower_spread(torch.cat([over_the_frame, on_one_object, torch.zeros(1, 1, 96, 96)]))
    assert spread.shape == (3,)
    assert spread[0] > 0.8  # every 32-px cell holds some of the shower
    assert spread[1] == 0 and spread[2] == 0  # five of nine cells unmarked; an empty mask
    assert shower_spread(torch.ones(2, 1, 5, 3)).tolist() == [1.0, 1.0]  # smaller than a cell: one cell


def test_the_shower_check_returns_marks_on_one_object_bit_for_bit_and_only_at_inference():
    """`shower` (six streaks and a line in the top-left of the frame) is marked on one object's
    area: with the check the model returns it untouched; `downpour` (streaks over the frame) is
    re-drawn as without the check; in training the check does nothing (the head still learns)."""
    torch.manual_seed(0)
    prior = create_model("vq_autoencoder_tiny").eval()
    checked = create_model("masked_prior_tiny", prior=prior, bright_gate=11, shower_check=0.45)
    unchecked = create_model("masked_prior_tiny", prior=prior, bright_gate=11)
    unchecked.load_state_dict(checked.state_dict())
    with torch.no_grad():
        for model in (checked, unchecked):
            model.mask_head.to_logits.bias.fill_(1e4)  # the head marks every pixel as rain
        checked.eval()
        unchecked.eval()
        assert torch.equal(checked(shower()), shower())
        assert not torch.equal(unchecked(shower()), shower())
        assert torch.equal(checked(downpour()), unchecked(downpour()))
        assert not torch.equal(checked(downpour()), downpour())
        assert torch.equal(checked.train().rain_mask(shower()), unchecked.train().rain_mask(shower()))


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_shower_check_must_lie_between_0_and_1(value):
    raw = read_params("params.yaml")
    raw["train"]["model"]["shower_check"] = value
    with pytest.raises(ParamsError, match=r"train\.model.*shower_check"):
        parse_params(raw, "params.yaml")


def test_a_checkpoint_saved_before_the_shower_check_loads_with_it_off(tmp_path):
    """A registered version keeps the behaviour it was evaluated and gated with: its spec has no
    `shower_check`, so it loads at 0; a checkpoint that names the key keeps its value."""
    from pipeline.models.factory import derain_checkpoint, load_derain_model, parse_spec

    prior = create_model("vq_autoencoder_tiny").eval()
    spec = parse_spec("masked_prior_tiny", shower_check=0.45)
    saved = derain_checkpoint(spec, create_model(spec, prior=prior).state_dict(), prior.spec)
    torch.save(saved, tmp_path / "now.pt")
    saved["spec"].pop("shower_check")
    torch.save(saved, tmp_path / "before.pt")
    assert load_derain_model(tmp_path / "now.pt").shower_check == 0.45
    assert load_derain_model(tmp_path / "before.pt").shower_check == 0.0


def test_a_batch_with_nothing_to_re_draw_skips_the_branch_and_comes_back_bit_for_bit():
    """At inference, when every mask of the batch is 0 (the shower check left the image alone) the
    re-drawing branch is not run; with one marked pixel it is, and in training it always is."""
    torch.manual_seed(0)
    prior = create_model("vq_autoencoder_tiny").eval()
    model = create_model("masked_prior_tiny", prior=prior, bright_gate=11, shower_check=0.45).eval()
    calls = []
    run_branch = model.branch.restore
    model.branch.restore = lambda x, return_latent: calls.append(x.shape) or run_branch(x, return_latent)
    with torch.no_grad():
        model.mask_head.to_logits.bias.fill_(1e4)
        assert torch.equal(model(shower()), shower()) and calls == []  # marks on one object: checked away
        assert not torch.equal(model(downpour()), downpour()) and len(calls) == 1
        model.train()(shower())
        assert len(calls) == 2


def test_the_evaluated_spec_adds_the_check_only_to_architectures_that_have_it():
    from pipeline.models.factory import _as_evaluated

    assert _as_evaluated({"type": "masked_fused", "blocks": 1})["shower_check"] == 0.0
    assert _as_evaluated({"type": "masked_prior", "shower_check": 0.45})["shower_check"] == 0.45
    assert "shower_check" not in _as_evaluated({"type": "resnet", "channels": 8})
    assert _as_evaluated({"type": "no_such_type"}) == {"type": "no_such_type"}
