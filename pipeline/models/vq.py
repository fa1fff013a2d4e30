"""The content prior: a small VQ autoencoder (VQGAN-lite) and its optional patch discriminator.

Images are float32 NCHW in [0, 1]. The encoder maps (N, 3, H, W) to a latent grid
(N, D, H / s, W / s) with s = 2**downsample; the quantizer replaces each D-vector by its nearest
codebook entry; the decoder draws an image in (0, 1) (sigmoid) from the quantized grid. H and W
must be multiples of `stride` (the deraining model that renders through the prior pads).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import VQAutoencoderSpec
from pipeline.models.registry import register_architecture, register_variant
from pipeline.models.resnet import ResBlock, activation, conv3x3


_NEAREST_CHUNK = 4096  # latents scored against the codebook at once (4096 x 1024 codes x 4 B = 16 MiB)


class Quantized(NamedTuple):
    """Output of :class:`VectorQuantizer` for a latent grid z of shape (N, D, h, w)."""

    latent: torch.Tensor  # (N, D, h, w): codebook vectors, straight-through gradient to z
    codes: torch.Tensor  # (N, h, w) int64 in [0, codebook_size)
    codebook_loss: torch.Tensor  # ||sg(z) - e||² (moves the codebook towards the encoder)
    commitment_loss: torch.Tensor  # ||z - sg(e)||² (keeps the encoder near its codes)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook of `size` unit vectors of `dim`, straight-through gradients.

    Latents and codes live on the unit sphere (cosine similarity, as in ViT-VQGAN): distances stay
    bounded, which keeps short CPU trainings stable and the codebook well used.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.codebook = nn.Parameter(F.normalize(torch.randn(size, dim), dim=1))

    @property
    def size(self) -> int:
        return self.codebook.shape[0]

    def unit_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=1)

    @torch.no_grad()  # integer codes: nothing to differentiate
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Code indices (N, h, w) int64 of the entries nearest to unit latents z (N, D, h, w)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        codebook = self.unit_codebook().to(flat.dtype).t()
        codes = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
        # In chunks, into one reused buffer: a 1024² image has 262k latents, and their similarity
        # to every code at once would be a matrix of up to 1 GiB, written to fresh memory and read back.
        similarity = flat.new_empty(min(_NEAREST_CHUNK, flat.shape[0]), codebook.shape[1])
        for start in range(0, flat.shape[0], _NEAREST_CHUNK):
            chunk = flat[start : start + _NEAREST_CHUNK]
            scores = torch.mm(chunk, codebook, out=similarity[: chunk.shape[0]])
            codes[start : start + chunk.shape[0]] = scores.argmax(dim=1)
        return codes.view(z.shape[0], *z.shape[2:])

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Unit codebook vectors (N, D, h, w) for code indices (N, h, w)."""
        # F.embedding, not indexing: indexing's backward accumulates into the codebook with
        # multithreaded float adds in varying order on CPU, so two identical runs would differ.
        return F.embedding(codes, self.unit_codebook()).permute(0, 3, 1, 2)

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantize unit latents z (N, D, h, w) (see VQAutoencoder.encode). The two losses are
        computed only where gradients are (training); at inference they are zeros."""
        codes = self.nearest(z.detach())
        quantized = self.lookup(codes)
        if torch.is_grad_enabled():
            codebook_loss = F.mse_loss(quantized, z.detach())
            commitment_loss = F.mse_loss(z, quantized.detach())
        else:
            codebook_loss = commitment_loss = z.new_zeros(())
        # Straight-through: forward uses the codebook vector, backward passes the gradient to z.
        latent = z + (quantized - z).detach()
        return Quantized(latent, codes, codebook_loss, commitment_loss)


def check_prior_input(x: torch.Tensor, stride: int, why: str) -> None:
    """Every prior takes NCHW with 3 channels and sides divisible by its `stride` (`why`: where
    the stride comes from, for the message); ValueError otherwise."""
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2] % stride or x.shape[-1] % stride:
        raise ValueError(
            f"the prior takes float32 NCHW with 3 channels and sides divisible by {stride} ({why}), got shape {tuple(x.shape)}"
        )


def widths(channels: int, downsample: int) -> list[int]:
    """Width at each resolution level: `channels` at full size, doubling at every ×2 downsample."""
    return [channels * 2**level for level in range(downsample + 1)]


class Encoder(nn.Module):
    """(N, 3, H, W) in [0, 1] -> (N, latent_dim, H / 2**downsample, W / 2**downsample), unnormalized."""

    def __init__(self, channels: int, latent_dim: int, downsample: int, res_blocks: int, extra_blocks: int = 0):
        super().__init__()
        sizes = widths(channels, downsample)
        layers: list[nn.Module] = [conv3x3(3, sizes[0]), activation()]
        for wide, wider in zip(sizes, sizes[1:]):
            layers += [conv3x3(wide, wider, stride=2), activation()]
        layers += [ResBlock(sizes[-1]) for _ in range(res_blocks)]
        self.features = nn.Sequential(*layers)
        # Extra identity-initialized blocks: only the restoration encoder of prior_resnet has them.
        self.extra = nn.Sequential(*(ResBlock(sizes[-1], zero_init=True) for _ in range(extra_blocks)))
        self.to_latent = nn.Conv2d(sizes[-1], latent_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.extra(self.features(x * 2.0 - 1.0)))


class Decoder(nn.Module):
    """(N, latent_dim, h, w) -> (N, 3, h·2**downsample, w·2**downsample) in (0, 1)."""

    def __init__(self, channels: int, latent_dim: int, downsample: int, res_blocks: int):
        super().__init__()
        sizes = widths(channels, downsample)[::-1]
        layers: list[nn.Module] = [conv3x3(latent_dim, sizes[0]), activation()]
        layers += [ResBlock(sizes[0]) for _ in range(res_blocks)]
        for wide, narrower in zip(sizes, sizes[1:]):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(wide, narrower), activation()]
        layers += [conv3x3(sizes[-1], 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(latent))


class VQAutoencoder(nn.Module):
    """Encoder, codebook and decoder; ``forward(x)`` returns the reconstruction and the VQ terms."""

    def __init__(self, spec: VQAutoencoderSpec):
        super().__init__()
        self.spec = spec
        self.stride = 2**spec.downsample
        self.encoder = Encoder(spec.channels, spec.latent_dim, spec.downsample, spec.res_blocks)
        self.quantizer = VectorQuantizer(spec.codebook_size, spec.latent_dim)
        self.decoder = Decoder(spec.channels, spec.latent_dim, spec.downsample, spec.res_blocks)

    def check_shape(self, x: torch.Tensor) -> None:
        check_prior_input(x, self.stride, "2**downsample")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> continuous latent (N, D, H/s, W/s), unit vectors along D."""
        self.check_shape(x)
        return F.normalize(self.encoder(x), dim=1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Quantized latent (N, D, h, w) -> image (N, 3, h·s, w·s) in (0, 1)."""
        return self.decoder(latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        quantized = self.quantizer(self.encode(x))
        return self.decode(quantized.latent), quantized


class PatchDiscriminator(nn.Module):
    """PatchGAN critic: (N, 3, H, W) in [0, 1] -> realness logits (N, 1, H/8, W/8)."""

    def __init__(self, channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        width_in = 3
        for level in range(3):
            width_out = channels * 2**level
            layers += [nn.Conv2d(width_in, width_out, 4, stride=2, padding=1), activation()]
            width_in = width_out
        layers.append(nn.Conv2d(width_in, 1, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x * 2.0 - 1.0)


@register_architecture("vq_autoencoder", VQAutoencoderSpec)
def build_vq_autoencoder(spec: VQAutoencoderSpec, **_: object) -> VQAutoencoder:
    return VQAutoencoder(spec)


register_variant(
    "vq_autoencoder_tiny",
    {"type": "vq_autoencoder", "channels": 4, "latent_dim": 4, "codebook_size": 16, "downsample": 1, "res_blocks": 1},
)
