"""CodeFormer-style fusion of the input's detail into the frozen prior decoder: `fused_prior`.

The prior_resnet path (restoration encoder -> frozen codebook -> frozen decoder) draws a clean
image that can only be what the prior can draw, blurred to the prior's ceiling. A full-resolution
detail encoder reads the rainy input, and a fusion layer turns [detail, decoder features] into a
per-pixel scale and shift of the decoder's last feature map:

    dec' = dec + fidelity · (dec · scale + shift)

before the decoder's own (frozen) output layer. fidelity = 0 is the pure prior; the model is
trained at its spec's fidelity (1 by default) and it can be lowered at inference
(`model.fidelity = 0.5`) to trade input fidelity for prior. The fusion layer starts at zero, so
training begins from the prior_resnet output. Images are float32 NCHW in [0, 1]. VQ priors only:
a diffusers decoder's layers are not ours to split.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import FusedPriorSpec, MaskedFusedSpec, PriorResNetSpec
from pipeline.models.prior_net import PriorResNet
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import ResBlock, activation, conv3x3
from pipeline.models.vq import VQAutoencoder


class FusedPrior(PriorResNet):
    """PriorResNet whose frozen decoder's last features are modulated by input features."""

    def __init__(self, spec: PriorResNetSpec, prior: VQAutoencoder, detail_channels: int, fidelity: float):
        super().__init__(spec, prior)
        width = prior.decoder.layers[-1].in_channels  # the decoder's last feature width
        self.detail = nn.Sequential(conv3x3(3, detail_channels), activation(), ResBlock(detail_channels))
        self.fuse = nn.Sequential(conv3x3(detail_channels + width, width), activation(), conv3x3(width, 2 * width))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)
        self.fidelity = fidelity

    @classmethod
    def from_prior(cls, spec: FusedPriorSpec | MaskedFusedSpec, prior) -> "FusedPrior":
        if not isinstance(prior, VQAutoencoder):
            raise ValueError(f"model type {spec.type!r} fuses into a vq_autoencoder prior's decoder, got {type(prior).__name__}")
        branch = PriorResNetSpec(type="prior_resnet", blocks=spec.blocks, init_from_prior=spec.init_from_prior)
        return cls(branch, prior, spec.detail_channels, spec.fidelity)

    def restore(self, x: torch.Tensor, return_latent: bool):
        latent = nn.functional.normalize(self.encoder(x), dim=1)
        decoder = self.prior.decoder.layers  # frozen; its last layer is the output convolution
        features = decoder[:-1](self.prior.quantizer(latent).latent)
        scale, shift = self.fuse(torch.cat([self.detail(x * 2.0 - 1.0), features], dim=1)).chunk(2, dim=1)
        fused = features + self.fidelity * (features * scale + shift)
        return torch.sigmoid(decoder[-1](fused)), (latent if return_latent else None)


@register_architecture("fused_prior", FusedPriorSpec)
def build_fused_prior(spec: FusedPriorSpec, prior=None, **_: object) -> FusedPrior:
    if prior is None:
        raise ValueError(f"model type {spec.type!r} renders through a trained prior: pass prior=load_prior(path)")
    return FusedPrior.from_prior(spec, prior)


register_variant("fused_prior_tiny", {"type": "fused_prior", "blocks": 1, "detail_channels": 4})
