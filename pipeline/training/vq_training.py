"""The VQ autoencoder prior's training: its objects and what each step and interval does.

Loss: L1 reconstruction + codebook + commitment_weight · commitment terms, plus an optional hinge
patch-discriminator term; Adam with a cosine decay of the learning rate. Codes left unused for
`restart_every` steps are re-seeded with encoder outputs of the current batch (the first restart,
at step 0, initialises the whole codebook from data), during the first 80% of the iterations.
The prior step (prior.py) runs it through a session.TrainingSession.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.config import Params
from pipeline.training.prior import evenly_spaced, prior_scores

RESTART_FRACTION = 0.8  # no re-seeding after this fraction of iterations: the decoder settles
VAL_SUBSET = 256  # patches scored at each interval (the final metrics use every val patch)


def reseed_unused_codes(quantizer, latents, usage, generator) -> int:
    """Replace codes with usage 0 by random latent vectors of this batch; returns how many.

    `latents`: unit latents (N, D, h, w); `usage`: int64 (K,) counts since the last re-seed.
    """
    import torch

    dead = torch.nonzero(usage == 0).flatten()
    if len(dead) == 0:
        return 0
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    if len(vectors) >= len(dead):
        pick = torch.randperm(len(vectors), generator=generator)[: len(dead)]
    else:
        pick = torch.randint(len(vectors), (len(dead),), generator=generator)
    with torch.no_grad():
        quantizer.codebook[dead.to(quantizer.codebook.device)] = vectors[pick.to(vectors.device)].to(quantizer.codebook.dtype)
    return len(dead)


def build_vq_trainer(params: Params, curated: Path) -> VQTrainer:
    """The model, patches, optimizers and code usage, created in the order that fixes the initialisation."""
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from pipeline.models.factory import create_model
    from pipeline.models.vq import PatchDiscriminator
    from pipeline.training.data import load_patches
    from pipeline.training.loop import select_device

    cfg = params.prior
    device = select_device()
    torch.manual_seed(params.seed)  # weight initialisation
    model = create_model(cfg.model).to(device, memory_format=torch.channels_last)
    train_patches = load_patches(curated / layout.PATCHES_PRIOR, model.stride)
    val_patches = load_patches(curated / layout.PATCHES_VAL, model.stride)
    optimizer = create_optimizer_v2(model, opt="adam", lr=cfg.lr, weight_decay=0.0)
    # Cosine decay to 1% of lr: short CPU runs gain most of their final quality in the decay.
    scheduler = CosineLRScheduler(optimizer, t_initial=cfg.iterations, lr_min=cfg.lr * 0.01, t_in_epochs=False)
    discriminator = disc_optimizer = None
    if cfg.discriminator_weight > 0:
        discriminator = PatchDiscriminator(cfg.model.channels).to(device, memory_format=torch.channels_last)
        disc_optimizer = create_optimizer_v2(discriminator, opt="adam", lr=cfg.lr, weight_decay=0.0)
    usage = torch.zeros(cfg.model.codebook_size, dtype=torch.int64, device=device)
    return VQTrainer(params, device, model, train_patches, val_patches, optimizer, scheduler, usage, discriminator, disc_optimizer)


@dataclass
class VQTrainer:
    """One VQ prior training run's objects, and what it does per step and per interval.

    `usage`: int64 (K,) how often each code was picked since the last re-seed.
    """

    params: Params
    device: object
    model: object
    train_patches: np.ndarray  # uint8 (N, P, P, 3)
    val_patches: np.ndarray
    optimizer: object
    scheduler: object
    usage: object
    discriminator: object | None = None
    disc_optimizer: object | None = None
    val_subset: np.ndarray = field(init=False)  # the patches scored at each interval

    def __post_init__(self) -> None:
        self.val_subset = evenly_spaced(self.val_patches, VAL_SUBSET)

    def state_parts(self) -> dict[str, object]:
        """What a checkpoint holds besides the step and the rows (session.TrainingSession.parts)."""
        from pipeline.training.session import TensorState

        parts = {"model": self.model, "optimizer": self.optimizer, "usage": TensorState(self.usage)}
        if self.discriminator is not None:
            parts.update(discriminator=self.discriminator, disc_optimizer=self.disc_optimizer)
        return parts

    def make_batch(self, step: int):
        """Float32 NCHW clean crops of step `step` (whole patches, augmented)."""
        from pipeline.seeds import numpy_rng
        from pipeline.training.data import random_crops, to_tensor

        rng = numpy_rng(self.params.seed, "prior/batch", step)
        patches = self.train_patches
        return to_tensor(random_crops(patches, self.params.prior.batch_size, patches.shape[1], True, rng))

    def train_step(self, step: int, batch) -> dict[str, float]:
        """One step: codebook re-seeding when due, the VQ (and discriminator) updates; returns the scalars."""
        import torch
        import torch.nn.functional as F

        from pipeline.seeds import torch_generator
        from pipeline.training.loop import to_device

        cfg, model, usage, discriminator = self.params.prior, self.model, self.usage, self.discriminator
        model.train()
        clean = to_device(batch, self.device)
        latent = model.encode(clean)
        reseeded = 0
        if cfg.restart_every and step % cfg.restart_every == 0 and step < RESTART_FRACTION * cfg.iterations:
            reseeded = reseed_unused_codes(model.quantizer, latent.detach(), usage, torch_generator(self.params.seed, "prior/restart", step))
            usage.zero_()
        quantized = model.quantizer(latent)
        recon = model.decode(quantized.latent)
        l1 = F.l1_loss(recon, clean)
        loss = l1 + quantized.codebook_loss + cfg.commitment_weight * quantized.commitment_loss
        if discriminator is not None:
            loss = loss - cfg.discriminator_weight * discriminator(recon).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step_update(step + 1)
        if discriminator is not None:
            disc_loss = F.relu(1 - discriminator(clean)).mean() + F.relu(1 + discriminator(recon.detach())).mean()
            self.disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            self.disc_optimizer.step()
        usage.add_(torch.bincount(quantized.codes.flatten(), minlength=usage.numel()))
        return {"loss": loss.item(), "l1": l1.item(), "commitment": quantized.commitment_loss.item(), "reseeded": float(reseeded)}

    def validate(self) -> dict[str, float]:
        """Reconstruction PSNR (dB) and codebook usage on an evenly spaced subset of the val patches."""
        self.model.eval()
        scores = prior_scores(self.model, self.val_subset, self.device)
        return {"val_recon_psnr": scores["recon_psnr"], "val_codebook_usage": scores["codebook_usage"]}
