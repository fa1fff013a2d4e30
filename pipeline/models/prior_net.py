"""The prior-constrained deraining model (`prior_resnet`).

A restoration encoder maps the rainy image to the prior's latent space; the prior's FROZEN
codebook quantizes the prediction (straight-through gradient) and its FROZEN decoder renders it.
The output can only be what the decoder can draw: clean-image content, in (0, 1).

Training loss (pipeline.training.loop): L1(output, clean) + latent_weight · MSE(predicted latent,
prior encoder's latent of the clean image).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.config import PriorResNetSpec
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import DerainNet
from pipeline.models.vq import Encoder, VQAutoencoder


class PriorResNet(DerainNet):
    """Restoration encoder (the prior encoder's layout + `blocks` residual blocks) -> frozen VQ prior."""

    def __init__(self, spec: PriorResNetSpec, prior: VQAutoencoder):
        super().__init__()
        prior_spec = prior.spec
        self.stride = prior.stride
        self.encoder = Encoder(
            prior_spec.channels, prior_spec.latent_dim, prior_spec.downsample, prior_spec.res_blocks, extra_blocks=spec.blocks
        )
        if spec.init_from_prior:
            # Same layout as the prior's encoder: training starts from the prior's reconstruction.
            missing, unexpected = self.encoder.load_state_dict(prior.encoder.state_dict(), strict=False)
            if unexpected or any(not key.startswith("extra.") for key in missing):
                raise ValueError(f"prior encoder does not fit the restoration encoder: missing {missing}, unexpected {unexpected}")
        self.prior = prior
        self.prior.requires_grad_(False)

    def train(self, mode: bool = True) -> "PriorResNet":
        super().train(mode)
        self.prior.eval()  # the prior is frozen, whatever mode the model is in
        return self

    def restore(self, x: torch.Tensor, return_latent: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        latent = F.normalize(self.encoder(x), dim=1)  # unit vectors, like the prior's latents
        image = self.prior.decode(self.prior.quantizer(latent).latent)
        return image, (latent if return_latent else None)

    @torch.no_grad()
    def target_latent(self, clean: torch.Tensor) -> torch.Tensor:
        """The prior encoder's unit latent of the clean image: (N, D, H/s, W/s), the latent-loss target."""
        return self.prior.encode(clean)


@register_architecture("prior_resnet", PriorResNetSpec)
def build_prior_resnet(spec: PriorResNetSpec, prior: VQAutoencoder | None = None, **_: object) -> PriorResNet:
    if prior is None:
        raise ValueError("model type 'prior_resnet' renders through a trained prior: pass prior=load_prior(path)")
    if not isinstance(prior, VQAutoencoder):
        raise ValueError(f"prior_resnet needs a VQAutoencoder prior, got {type(prior).__name__}")
    return PriorResNet(spec, prior)


register_variant("prior_resnet_tiny", {"type": "prior_resnet", "blocks": 1})
