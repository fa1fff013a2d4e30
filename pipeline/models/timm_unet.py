"""UNet whose encoder is any timm model created with ``features_only=True`` (`timm_unet`).

The encoder's pretrained weights come only from a local file (``weights:`` in the spec); nothing
is downloaded. The light decoder upsamples the deepest features ×2 at a time, concatenating each
shallower feature map (a skip), and predicts a residual added to the input image.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TimmUNetSpec
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import DerainNet, activation


def create_encoder(name: str, weights: str | Path | None) -> nn.Module:
    """timm feature extractor `name`; pretrained weights from the local file `weights` if given."""
    import timm

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"train.model.encoder: {name!r} is not a timm model.{hint} "
            f"Valid names are those of timm.list_models() ({len(timm.list_models())} models), "
            "e.g. resnet10t, resnet18, mobilenetv3_small_100, efficientnet_b0."
        )
    kwargs: dict = {"features_only": True, "pretrained": False}
    if weights is not None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(f"train.model.weights: {weights} does not exist (a local .safetensors/.pth file of {name}'s weights)")
        # pretrained=True with a file overlay loads that file and never touches the network.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    try:
        return timm.create_model(name, **kwargs)
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"train.model: timm could not build {name!r} as a feature extractor (features_only): {error}") from error


class TimmUNet(DerainNet):
    """timm feature pyramid (strides 2..32 typically) + ×2 upsampling decoder + global residual."""

    def __init__(self, spec: TimmUNetSpec, weights: Path | None = None):
        super().__init__()
        self.encoder = create_encoder(spec.encoder, weights)
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        self.stride = max(reductions)
        # Normalize as the encoder was (pre)trained: its config's mean and std.
        config = self.encoder.pretrained_cfg
        self.register_buffer("mean", torch.tensor(config.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1), persistent=False)
        width = spec.decoder_channels
        self.reductions = reductions
        self.enter = nn.Conv2d(channels[-1], width, 1)
        # One fuse step per shallower feature map, then one back to full resolution with the image.
        self.fuse = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width + skip, width, 3, padding=1), activation()) for skip in channels[-2::-1]
        )
        self.to_image = nn.Sequential(nn.Conv2d(width + 3, width, 3, padding=1), activation(), nn.Conv2d(width, 3, 3, padding=1))
        nn.init.zeros_(self.to_image[-1].weight)
        nn.init.zeros_(self.to_image[-1].bias)

    def restore(self, x: torch.Tensor, return_latent: bool) -> tuple[torch.Tensor, None]:
        features = self.encoder((x - self.mean) / self.std)
        y = self.enter(features[-1])
        for fuse, skip in zip(self.fuse, features[-2::-1]):
            y = fuse(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], dim=1))
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x + self.to_image(torch.cat([y, x], dim=1)), None


@register_architecture("timm_unet", TimmUNetSpec)
def build_timm_unet(spec: TimmUNetSpec, load_weights: bool = True, root: Path | None = None, **_: object) -> TimmUNet:
    """`load_weights=False` skips the local weights file (a trained checkpoint replaces them)."""
    weights = None
    if load_weights and spec.weights is not None:
        weights = Path(spec.weights) if root is None else Path(root) / spec.weights
    return TimmUNet(spec, weights)


register_variant("timm_unet_tiny", {"type": "timm_unet", "encoder": "test_efficientnet", "decoder_channels": 8})
