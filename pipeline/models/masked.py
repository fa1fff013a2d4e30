"""Rain-mask composition (JORDER-style), the default deraining model: `masked_prior`.

    out = (1 - m) · x + m · P(x)

x is the rainy input, P(x) the prior-constrained re-drawing (a prior_resnet or fused_prior branch:
only what the frozen prior's decoder can draw) and m in [0, 1] the rain mask predicted by a small
dilated-conv head. The synthesizer hands us the rain layer R for free, so m is supervised by it
(pipeline.training.losses.mask_target); wherever the head says "no rain" (m = 0) the pixel comes
back exactly as it was, so a dry photo is returned unchanged and the background is never
repainted. The head's mask is multiplied by gates measured on the input (pipeline.models.gates:
the pixel must be brighter than its surroundings, and its bright structure must lie along the
image's streaks); at inference, an image whose gated mask does not cover the frame like a shower
is returned whole (`shower_check`). Shapes: float32 NCHW in [0, 1] in and out; m is (N, 1, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import MaskedFusedSpec, MaskedPriorSpec, PriorResNetSpec
from pipeline.models.gates import (
    GATE_SCALE,
    STREAK_WINDOW,
    bright_excess,
    shower_spread,
    streak_alignment,
)
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import DerainNet, activation

MASK_DILATIONS = (1, 2, 4, 8, 1)  # receptive field 35 px: a streak is judged against its surroundings
MASK_INIT_BIAS = -4.0  # sigmoid(-4) = 0.018: training starts near the identity (a dry photo untouched)


class RainMaskHead(nn.Module):
    """(N, 3, H, W) in [0, 1] -> logits (N, outputs, H, W); `sigmoid` of channel 0 is the rain mask
    (the `subtract` composition reads two more channels: the rain's light and the lost content).

    The input is replicate-padded once by the whole receptive field and every convolution is
    unpadded: one pad of 3 channels instead of a padded copy of every feature map (channels_last
    padding is a slow loop on the CPU).
    """

    def __init__(self, channels: int, outputs: int = 1):
        super().__init__()
        self.reach = 1 + sum(MASK_DILATIONS)
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3), activation()]
        for dilation in MASK_DILATIONS:
            layers += [nn.Conv2d(channels, channels, 3, dilation=dilation), activation()]
        self.features = nn.Sequential(*layers)
        self.to_logits = nn.Conv2d(channels, outputs, 1)
        nn.init.zeros_(self.to_logits.weight)
        nn.init.constant_(self.to_logits.bias, MASK_INIT_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x * 2.0 - 1.0, (self.reach,) * 4, mode="replicate")
        return self.to_logits(self.features(padded))


SATURATED = 0.94  # darkest channel above this: a saturating add may have clipped the content away


def saturation(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1]: 0 where the darkest channel is <= SATURATED, 1 at pure white; where
    the rain clipped a pixel to white, subtracting its light cannot bring the content back."""
    return ((x.amin(dim=1, keepdim=True) - SATURATED) / (1.0 - SATURATED)).clamp(0.0, 1.0)


class MaskedComposition(DerainNet):
    """out = x + m · (branch(x) - x): the branch re-draws only where the mask head sees rain.

    m = max(0, p - deadzone) / (1 - deadzone) for the head's probability p: below the deadzone
    the pixel is returned bit for bit, so the faint doubts a sigmoid always leaves on dry texture
    cannot soften a photo. After a training forward, `self.aux` holds the head's logits
    (N, 1, H, W) for the mask loss (which sees p itself) and the branch's drawing P(x), which is
    trained on every pixel (`train.branch_weight`), not only where the mask already opened; at
    inference nothing is kept.
    """

    def __init__(self, branch: DerainNet, spec: MaskedPriorSpec | MaskedFusedSpec):
        super().__init__()
        self.branch = branch
        self.stride = branch.stride
        self.deadzone = spec.mask_deadzone
        self.bright_gate = spec.bright_gate | 1 if spec.bright_gate else 0  # an odd window: centred
        self.streak_gate = spec.streak_gate
        # At inference the head also reads the input downscaled by each further factor and keeps the
        # most confident answer: a streak wider than any it was trained on looks, at half size, like
        # one it knows. Training reads full resolution only: trained through the maximum, the head
        # learned to leave wide rain to the coarse pass and found less of it (README, the ablation).
        self.mask_scales = tuple(spec.mask_scales)
        # At inference only, like mask_scales: the head still learns every crop's rain; the check
        # decides, per image (per tile), whether what it marked looks like a shower at all.
        self.shower_check = spec.shower_check
        self.darken = spec.composition == "darken"
        # subtract: every rain model here adds light, so where the content shows through, the
        # input minus the estimated rain light a is exact; only where the rain saturated the pixel
        # (the content is lost) does the prior's drawing take over. An ambiguous dry pixel then
        # costs m·a (L1 trains a toward the median rain light there: 0), not m·|P(x) - x| (the
        # prior's blur of fine detail, and the streak's light smeared into its neighbours).
        self.subtract = spec.composition == "subtract"
        self.mask_head = RainMaskHead(spec.mask_channels, outputs=2 if self.subtract else 1)
        self.aux: dict[str, torch.Tensor] = {}

    @property
    def prior(self):
        return self.branch.prior

    def target_latent(self, clean: torch.Tensor) -> torch.Tensor:
        return self.branch.target_latent(clean)

    def _mask(self, logits: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(logits) - self.deadzone).clamp(min=0.0) / (1.0 - self.deadzone)

    def rain_mask(self, x: torch.Tensor) -> torch.Tensor:
        """The composition mask m (N, 1, H, W) in [0, 1] of a batch (sides multiples of stride)."""
        return self._checked(self._gated(x, self._mask(self._heads(x)[:, :1]))[0])

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """The head's outputs (N, outputs, H, W); at inference the mask logit (channel 0) is the largest
        over `mask_scales`."""
        heads = self.mask_head(x)
        for factor in () if self.training else self.mask_scales[1:]:
            coarse = self.mask_head(F.avg_pool2d(x, factor, ceil_mode=True))[:, :1]
            coarse = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
            heads = torch.cat([torch.maximum(heads[:, :1], coarse), heads[:, 1:]], dim=1)
        return heads

    def _gated(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mask times the gates that are on, the top-hat excess when the bright gate is on, else None)."""
        if not (self.bright_gate or self.streak_gate):
            return mask, None
        excess = bright_excess(x, self.bright_gate or STREAK_WINDOW)
        if self.bright_gate:
            mask = mask * (excess / GATE_SCALE).clamp(max=1.0)
        if self.streak_gate:
            mask = mask * streak_alignment(excess, self.streak_gate)
        return mask, excess if self.bright_gate else None

    def _checked(self, mask: torch.Tensor) -> torch.Tensor:
        """The mask, zeroed for every image of the batch whose mask does not spread like a shower
        (inference only; `shower_check` 0 turns it off)."""
        if self.training or not self.shower_check:
            return mask
        return mask * (shower_spread(mask) >= self.shower_check).to(mask.dtype).view(-1, 1, 1, 1)

    def restore(self, x: torch.Tensor, return_latent: bool):
        heads = self._heads(x)
        logits = heads[:, :1]
        mask, excess = self._gated(x, self._mask(logits))
        mask = self._checked(mask)
        if not (self.training or return_latent) and not bool(mask.any()):
            # Nothing to re-draw in the whole batch (a dry photo, or one the shower check left
            # alone): skip the branch, the costlier half of the forward. lerp with m = 0 is x exactly.
            return x, None
        drawn, latent = self.branch.restore(x, return_latent)
        if self.training:
            self.aux = {"mask_logits": logits, "drawn": drawn}
        if self.darken:  # every rain model here adds light: where the re-drawing is brighter, keep x
            drawn = torch.minimum(drawn, x)
        if self.subtract:
            light = torch.sigmoid(heads[:, 1:2])
            if excess is not None:  # the rain's light cannot exceed the pixel's excess over its surroundings
                light = torch.minimum(light, excess)
            drawn = torch.lerp((x - light).clamp(min=0.0), drawn, saturation(x))
        return torch.lerp(x, drawn, mask), latent


def _prior_branch(spec, prior) -> DerainNet:
    from pipeline.models.fused import FusedPrior
    from pipeline.models.prior_net import build_prior_resnet

    if isinstance(spec, MaskedFusedSpec):
        return FusedPrior.from_prior(spec, prior)
    return build_prior_resnet(PriorResNetSpec(type="prior_resnet", blocks=spec.blocks, init_from_prior=spec.init_from_prior), prior)


@register_architecture("masked_prior", MaskedPriorSpec)
def build_masked_prior(spec: MaskedPriorSpec, prior=None, **_: object) -> MaskedComposition:
    return MaskedComposition(_prior_branch(spec, prior), spec)


@register_architecture("masked_fused", MaskedFusedSpec)
def build_masked_fused(spec: MaskedFusedSpec, prior=None, **_: object) -> MaskedComposition:
    return MaskedComposition(_prior_branch(spec, prior), spec)


# gates and the shower check off: the tests' tiny variants predate them (the spec's defaults are params.yaml's)
register_variant("masked_prior_tiny", {"type": "masked_prior", "blocks": 1, "mask_channels": 4, "bright_gate": 0, "streak_gate": 0,
                                      "shower_check": 0})
register_variant("masked_fused_tiny", {"type": "masked_fused", "blocks": 1, "mask_channels": 4, "detail_channels": 4, "bright_gate": 0,
                                      "streak_gate": 0, "shower_check": 0})
