"""Model specs: `prior.model` (PriorSpec) and `train.model` (DerainSpec), one class per `type`."""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field

from pipeline.params.base import Strict


class VQAutoencoderSpec(Strict):
    """The content prior: conv encoder, codebook, conv decoder (pipeline.models.vq).

    Width is `channels` at full resolution and doubles at each of the `downsample` ×2 steps; the
    latent grid is (H / 2**downsample, W / 2**downsample) vectors of `latent_dim`.
    """

    type: Literal["vq_autoencoder"]
    channels: int = Field(16, ge=4, le=512)
    latent_dim: int = Field(ge=2, le=512)  # required, like downsample: they shape the latent
    codebook_size: int = Field(256, ge=2, le=65536)
    downsample: int = Field(ge=1, le=4)
    res_blocks: int = Field(1, ge=0, le=16)  # residual blocks at the latent resolution, each side


class PretrainedAutoencoderSpec(Strict):
    """A user's own pre-trained autoencoder as the content prior (pipeline.models.pretrained_prior).

    `path`: a local diffusers model directory as written by ``save_pretrained`` (config.json +
    diffusion_pytorch_model.safetensors), absolute or relative to the workspace root; nothing is
    ever downloaded. `kind` names the diffusers class that config.json must declare
    (autoencoder_kl: AutoencoderKL, autoencoder_tiny: AutoencoderTiny). The prior stage does not
    train it: it measures it and stores a self-contained copy in `{prior}/prior.pt`.
    """

    type: Literal["pretrained_autoencoder"]
    path: str = Field(min_length=1)
    kind: Literal["autoencoder_kl", "autoencoder_tiny"]


PriorSpec = Annotated[Union[VQAutoencoderSpec, PretrainedAutoencoderSpec], Field(discriminator="type")]


class ResNetSpec(Strict):
    """Plain baseline: ResNet without batch norm and with a global residual."""

    type: Literal["resnet"]
    channels: int = Field(32, ge=4, le=512)
    blocks: int = Field(4, ge=1, le=64)


class PriorResNetSpec(Strict):
    """Restoration encoder rendering through the frozen prior's codebook and decoder.

    The encoder has the prior encoder's layout (its widths follow the prior) plus `blocks`
    residual blocks at the latent resolution; `init_from_prior` starts it from the prior's
    encoder weights, so that training begins from the prior's reconstruction of its input.
    """

    type: Literal["prior_resnet"]
    blocks: int = Field(ge=1, le=64)  # required, as in the masked and fused specs
    init_from_prior: bool = True


def _full_resolution_first(scales: list[int]) -> list[int]:
    if scales[0] != 1 or any(b <= a for a, b in pairwise(scales)):
        raise ValueError(f"mask_scales {scales}: start with 1 (full resolution), then increasing factors, e.g. [1, 2]")
    return scales


MaskScales = Annotated[list[Annotated[int, Field(ge=1, le=8)]], Field(min_length=1, max_length=4),
                       AfterValidator(_full_resolution_first)]


class MaskedPriorSpec(Strict):
    """JORDER-style mask composition (pipeline.models.masked): out = (1 - m)·x + m·prior_resnet(x).

    A small dilated-conv head predicts the rain mask m in [0, 1], supervised by the synthesized
    rain layer (`train.mask_weight`); pixels the head leaves at m = 0 come back exactly as they
    were, and what it marks is re-drawn by the prior-constrained branch (PriorResNetSpec fields).
    """

    type: Literal["masked_prior"]
    blocks: int = Field(ge=1, le=64)
    init_from_prior: bool = True
    mask_channels: int = Field(16, ge=4, le=256)
    mask_deadzone: float = Field(0.1, ge=0, lt=1)  # mask values below this count as 0: pixel kept exactly
    # replace: (1 - m)·x + m·P(x) | darken: P(x) may only remove light | subtract: the head also
    # estimates the rain's light a and where content is lost o; re-drawing = (1 - o)·(x - a) + o·P(x)
    composition: Literal["replace", "darken", "subtract"] = "replace"
    # Rain adds light to thin structures: a pixel is re-drawn only as far as it is brighter than its
    # surroundings (white top-hat over a bright_gate x bright_gate window); 0 = no gate.
    bright_gate: int = Field(21, ge=0, le=63)
    # The streaks of one shower share a direction: a bright pixel is re-drawn only as far as its
    # structure lies along the image's dominant direction, fully at this agreement (0..1]; 0 = no
    # gate. Read on the top-hat over the bright_gate window (11 px when the bright gate is off).
    streak_gate: float = Field(0.4, ge=0, le=1)
    # Downscaling factors the mask head also reads the input at, at inference (the most confident
    # answer wins): [1, 2] finds streaks up to twice as wide as the training rain's. Starts with 1.
    mask_scales: MaskScales = Field(default_factory=lambda: [1])
    # A shower covers the whole frame; the texture the head mistakes for rain covers objects. At
    # inference, an image whose mask spreads less evenly than this (gates.shower_spread: the 25th
    # percentile of its 32-px cell means over their mean, 0..1) comes back bit for bit; 0 = off.
    shower_check: float = Field(0.45, ge=0, le=1)


class FusedPriorSpec(Strict):
    """CodeFormer-style fusion (pipeline.models.fused): full-resolution input features modulate the
    frozen decoder's last features, dec + fidelity·(dec·scale + shift); fidelity 0 is the pure
    prior (prior_resnet), 1 the trained setting. `fidelity` may be changed at inference."""

    type: Literal["fused_prior"]
    blocks: int = Field(ge=1, le=64)
    init_from_prior: bool = True
    detail_channels: int = Field(16, ge=4, le=256)
    fidelity: float = Field(1.0, ge=0, le=2)


class MaskedFusedSpec(MaskedPriorSpec):
    """Both mechanisms: the rain-mask composition (every field of MaskedPriorSpec, same defaults)
    with the fused prior as the re-drawing branch (FusedPriorSpec's detail_channels and fidelity).
    A subclass, so the two mask compositions cannot drift apart; pydantic keeps the parent's field
    order with these two appended, so model_dump (checkpoints, the study's diffs) is unchanged."""

    type: Literal["masked_fused"]
    detail_channels: int = Field(16, ge=4, le=256)
    fidelity: float = Field(1.0, ge=0, le=2)


class ClassicalMedianSpec(Strict):
    """No learning (pipeline.models.classical): pixels brighter than their 7x7 median by more than
    `threshold` (0..1 grey levels) are replaced by that median; everything else is left as it was."""

    type: Literal["classical_median"]
    window: int = Field(7, ge=3, le=15)
    threshold: float = Field(0.08, gt=0, lt=1)


PRIOR_ARCHITECTURES = ("prior_resnet", "masked_prior", "fused_prior", "masked_fused")  # render through prior.pt


def autoencoder_stride(kind: str, config: dict) -> int:
    """Side ratio image / latent of a diffusers autoencoder (`kind` autoencoder_kl or
    autoencoder_tiny) from its config.json dict: each block but the first halves. Here, not in
    pipeline.models, because params validation needs it (params_checks.derain_stride)."""
    if kind == "autoencoder_kl":
        return 2 ** (len(config["block_out_channels"]) - 1)
    down = 2 ** (len(config["encoder_block_out_channels"]) - 1)
    up = config["upsampling_scaling_factor"] ** (len(config["decoder_block_out_channels"]) - 1)
    if up != down:
        raise ValueError(f"the AutoencoderTiny encoder downsamples ×{down} but its decoder upsamples ×{up}")
    return down


class TimmUNetSpec(Strict):
    """UNet whose encoder is any timm model that supports `features_only` (pipeline.models.timm_unet).

    `weights`: optional local file (.safetensors/.pth) of the encoder's pretrained weights,
    relative to the workspace root; nothing is ever downloaded.
    """

    type: Literal["timm_unet"]
    encoder: str = Field("resnet10t", min_length=1)
    weights: str | None = None
    decoder_channels: int = Field(32, ge=4, le=512)


DerainSpec = Annotated[
    Union[ResNetSpec, PriorResNetSpec, MaskedPriorSpec, FusedPriorSpec, MaskedFusedSpec, TimmUNetSpec, ClassicalMedianSpec],
    Field(discriminator="type"),
]
