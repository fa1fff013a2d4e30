"""The prior-constrained deraining model (`prior_resnet`).

A restoration encoder maps the rainy image to the prior's latent space and the prior's FROZEN
decoder renders it, so the output can only be what the decoder can draw: clean-image content, in
[0, 1]. With the VQ prior (`vq_autoencoder`) the prediction is first quantized by the FROZEN
codebook (straight-through gradient). A pretrained diffusers autoencoder
(`pretrained_autoencoder`, pipeline.models.pretrained_prior) has no codebook: its decoder renders
the predicted latent directly, and the latent-matching loss is what keeps the prediction on the
prior's latent manifold.

Training loss (pipeline.training.train): L1(output, clean) + latent_weight · MSE(predicted latent,
prior encoder's latent of the clean image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import PriorResNetSpec
from pipeline.models.pretrained_prior import PretrainedAutoencoderPrior
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import DerainNet
from pipeline.models.vq import Encoder, VQAutoencoder

Prior = VQAutoencoder | PretrainedAutoencoderPrior


def vq_restoration_encoder(spec: PriorResNetSpec, prior: VQAutoencoder) -> Encoder:
    """The VQ prior encoder's layout + `spec.blocks` identity-initialized residual blocks."""
    prior_spec = prior.spec
    encoder = Encoder(
        prior_spec.channels, prior_spec.latent_dim, prior_spec.downsample, prior_spec.res_blocks, extra_blocks=spec.blocks
    )
    if spec.init_from_prior:
        # Same layout as the prior's encoder: training starts from the prior's reconstruction.
        missing, unexpected = encoder.load_state_dict(prior.encoder.state_dict(), strict=False)
        if unexpected or any(not key.startswith("extra.") for key in missing):
            raise ValueError(f"prior encoder does not fit the restoration encoder: missing {missing}, unexpected {unexpected}")
    return encoder


class PriorResNet(DerainNet):
    """Restoration encoder -> frozen prior (codebook, for a VQ prior, then decoder)."""

    def __init__(self, spec: PriorResNetSpec, prior: Prior):
        super().__init__()
        self.stride = prior.stride
        self.quantize = isinstance(prior, VQAutoencoder)
        self.encoder: nn.Module
        if self.quantize:
            self.encoder = vq_restoration_encoder(spec, prior)
        else:
            self.encoder = prior.restoration_encoder(spec.blocks, spec.init_from_prior)
        self.prior = prior
        self.prior.requires_grad_(False)

    def train(self, mode: bool = True) -> "PriorResNet":
        super().train(mode)
        self.prior.eval()  # the prior is frozen, whatever mode the model is in
        return self

    def restore(self, x: torch.Tensor, return_latent: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.quantize:
            latent = F.normalize(self.encoder(x), dim=1)  # unit vectors, like the VQ prior's latents
            image = self.prior.decode(self.prior.quantizer(latent).latent)
        else:
            latent = self.encoder(x)  # no codebook: the decoder renders the predicted latent
            image = self.prior.decode(latent)
        return image, (latent if return_latent else None)

    @torch.no_grad()
    def target_latent(self, clean: torch.Tensor) -> torch.Tensor:
        """The prior encoder's latent of the clean image: (N, D, H/s, W/s), the latent-loss target."""
        return self.prior.encode(clean)


@register_architecture("prior_resnet", PriorResNetSpec)
def build_prior_resnet(spec: PriorResNetSpec, prior: Prior | None = None, **_: object) -> PriorResNet:
    if prior is None:
        raise ValueError("model type 'prior_resnet' renders through a trained prior: pass prior=load_prior(path)")
    if not isinstance(prior, (VQAutoencoder, PretrainedAutoencoderPrior)):
        raise ValueError(f"prior_resnet needs a VQAutoencoder or PretrainedAutoencoderPrior prior, got {type(prior).__name__}")
    return PriorResNet(spec, prior)


register_variant("prior_resnet_tiny", {"type": "prior_resnet", "blocks": 1})
