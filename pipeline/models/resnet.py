"""The plain baseline (ResNet, no batch norm, global residual) and what every deraining net shares.

Shared contract (:class:`DerainNet`): ``model(x)`` takes float32 NCHW in [0, 1] of ANY height and
width, reflect-pads it to a multiple of the model's ``stride``, restores it and crops back; in
eval mode the output is clamped to [0, 1] (training keeps gradients at the range's edges).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import ResNetSpec
from pipeline.models.registry import register_architecture, register_variant


def activation() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """`F.pad(x, (1, 1, 1, 1), mode="replicate")` for NCHW x, in x's memory format.

    Same values; written as one strided copy plus four edge copies, because torch's replication
    pad of a channels_last CPU tensor is a slow loop (51 ms against 13 ms for 16×1024², a quarter
    of a 1024² image's inference time before this; benchmarks/README.md).
    """
    n, c, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((n, c, h + 2, w + 2), dtype=x.dtype, device=x.device, memory_format=layout)
    out[:, :, 1:-1, 1:-1] = x
    out[:, :, 0, 1:-1] = x[:, :, 0]
    out[:, :, -1, 1:-1] = x[:, :, -1]
    out[:, :, :, 0] = out[:, :, :, 1]  # corners come with the columns
    out[:, :, :, -1] = out[:, :, :, -2]
    return out


class ReplicateConv2d(nn.Conv2d):
    """3×3 convolution with replicated borders (an nn.Conv2d with padding_mode="replicate": same
    parameters and state dict) whose padding, where no gradient is needed, is `replicate_pad1`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: torch's pad, whose backward is a single kernel
            return super()._conv_forward(input, weight, bias)
        return F.conv2d(replicate_pad1(input), weight, bias, self.stride, 0, self.dilation, self.groups)


def conv3x3(channels_in: int, channels_out: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with replicated borders: zero padding would darken every image's frame."""
    return ReplicateConv2d(channels_in, channels_out, 3, stride=stride, padding=1, padding_mode="replicate")


class ResBlock(nn.Module):
    """x + conv(act(conv(x))) at constant width; `zero_init` makes the block start as identity."""

    def __init__(self, channels: int, zero_init: bool = False):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.act = activation()
        self.conv2 = conv3x3(channels, channels)
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad NCHW on the bottom/right to a multiple of `multiple` (reflect; replicate when too small)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    # Reflection needs the pad to be smaller than the side; tiny inputs fall back to replication.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class DerainNet(nn.Module):
    """Base class: padding to `stride`, cropping back, the [0, 1] clamp in eval mode.

    Subclasses implement ``restore(x, return_latent)`` on inputs whose sides are multiples of
    ``stride``, returning ``(image, latent or None)``.
    """

    stride: int = 1

    def restore(self, x: torch.Tensor, return_latent: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise TypeError(f"{type(self).__name__} must define restore()")

    def forward(self, x: torch.Tensor, return_latent: bool = False):
        """float32 NCHW in [0, 1], any H×W -> the same shape (and the predicted latent if asked)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected float32 NCHW with 3 channels, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        image, latent = self.restore(pad_to_multiple(x, self.stride), return_latent)
        image = image[..., :height, :width]
        if not self.training:
            image = image.clamp(0.0, 1.0)
        return (image, latent) if return_latent else image


class ResNet(DerainNet):
    """conv -> `blocks` residual blocks -> conv, plus the input (global residual); full resolution."""

    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.head = nn.Sequential(conv3x3(3, channels), activation())
        self.body = nn.Sequential(*(ResBlock(channels) for _ in range(blocks)))
        self.tail = conv3x3(channels, 3)
        # Start as the identity: the network first learns the rain residual, not the image.
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def restore(self, x, return_latent):
        return x + self.tail(self.body(self.head(x))), None


@register_architecture("resnet", ResNetSpec)
def build_resnet(spec: ResNetSpec, **_: object) -> ResNet:
    return ResNet(spec.channels, spec.blocks)


register_variant("resnet_tiny", {"type": "resnet", "channels": 4, "blocks": 1})
