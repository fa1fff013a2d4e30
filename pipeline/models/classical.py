"""A no-learning baseline for the ablation table: bright-outlier detection plus median fill.

Rain brightens pixels, so a pixel whose grey level exceeds the median of its `window`² window by
more than `threshold` is taken for rain and replaced by that window's median (per channel);
every other pixel is left exactly as it was. No parameters are trained (`classical_median`).
Images are float32 NCHW in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import ClassicalMedianSpec
from pipeline.models.registry import register_architecture
from pipeline.models.resnet import DerainNet

GREY = (0.299, 0.587, 0.114)  # BT.601 luma weights


def median_filter(x: torch.Tensor, window: int) -> torch.Tensor:
    """Per-channel window² median of NCHW x (replicated borders), computed in row bands to bound memory."""
    pad = window // 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    out = torch.empty_like(x)
    rows = max(1, (1 << 24) // (window * window * x.shape[0] * x.shape[1] * x.shape[3]))
    for top in range(0, x.shape[2], rows):
        band = padded[:, :, top : top + rows + 2 * pad]
        patches = band.unfold(2, window, 1).unfold(3, window, 1)  # N, C, h, W, window, window
        out[:, :, top : top + rows] = patches.flatten(-2).median(dim=-1).values
    return out


class ClassicalMedian(DerainNet):
    def __init__(self, window: int, threshold: float):
        super().__init__()
        self.window, self.threshold = window, threshold
        self.register_buffer("grey", torch.tensor(GREY).view(1, 3, 1, 1))

    def rain_mask(self, x: torch.Tensor) -> torch.Tensor:
        """1 where the pixel is a bright outlier of its neighbourhood, else 0: (N, 1, H, W)."""
        grey = (x * self.grey).sum(1, keepdim=True)
        return (grey - median_filter(grey, self.window) > self.threshold).to(x.dtype)

    def restore(self, x: torch.Tensor, return_latent: bool):
        return torch.lerp(x, median_filter(x, self.window), self.rain_mask(x)), None


@register_architecture("classical_median", ClassicalMedianSpec)
def build_classical_median(spec: ClassicalMedianSpec, **_: object) -> ClassicalMedian:
    return ClassicalMedian(spec.window, spec.threshold)
