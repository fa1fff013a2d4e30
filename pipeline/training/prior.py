"""`prior` step: pre-train the VQ autoencoder content prior on clean curated patches, or adopt the
user's own pre-trained autoencoder (`prior.model.type: pretrained_autoencoder`).

Reads `{curated}/patches_prior.npy` and `patches_val.npy`; writes `{prior}/prior.pt`,
`metrics.json` (recon_psnr, codebook_usage, dead_codes, ...), `log.csv` and `recon.png`
(docs/dataflow.md). A pretrained autoencoder is not trained: it is measured on the validation
patches (codebook measures: null, not applicable), stored self-contained in prior.pt (weights +
diffusers config), with its origin under `source` in `metrics.json` (path, sha256 of the weights
file and of config.json) for the lineage.

VQ training loss: L1 reconstruction + codebook + commitment_weight · commitment terms,
plus an optional hinge patch-discriminator term; Adam with a cosine decay of the learning rate.
Codes left unused for `restart_every` steps are re-seeded with encoder outputs of the current
batch (the first restart, at step 0, initialises the whole codebook from data), during the first
80% of the iterations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.config import Params
from pipeline.evaluation.report import recon_sheet  # the sheet lives with the other report pictures

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


def reconstruct(prior, patches: np.ndarray, device, batch_size: int = 64, show_progress: bool = False):
    """Reconstructions of uint8 (N, P, P, 3) patches: float32 NCHW in [0, 1], and codes (N, h, w)
    int64 (None for a prior without a codebook)."""
    import torch
    from tqdm import tqdm

    from pipeline.training.data import to_tensor
    from pipeline.training.loop import to_device

    images, codes = [], []
    starts = range(0, len(patches), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="prior: reconstruct", unit="batch", disable=not show_progress):
            recon, encoded = prior(to_device(to_tensor(patches[start : start + batch_size]), device))
            images.append(recon.float().cpu())
            if prior.quantizer is not None:
                codes.append(encoded.codes.cpu())
    return torch.cat(images), (torch.cat(codes) if codes else None)


def prior_scores(prior, patches: np.ndarray, device, show_progress: bool = False) -> dict[str, float | None]:
    """recon_psnr (mean per-patch PSNR, dB), codebook_usage (fraction of codes used), dead_codes,
    perplexity (exp of the code entropy: the effective number of codes). The codebook measures are
    None (not applicable) for a prior without a codebook."""
    import torch

    from pipeline.evaluation.metrics import batch_psnr
    from pipeline.training.data import to_tensor

    recon, codes = reconstruct(prior, patches, device, show_progress=show_progress)
    recon_psnr = float(batch_psnr(recon, to_tensor(np.asarray(patches))).mean())
    if codes is None:
        return {"recon_psnr": recon_psnr, "codebook_usage": None, "dead_codes": None, "perplexity": None}
    counts = torch.bincount(codes.flatten(), minlength=prior.quantizer.size).double()
    probabilities = counts[counts > 0] / counts.sum()
    entropy = -(probabilities * probabilities.log()).sum()
    return {
        "recon_psnr": recon_psnr,
        "codebook_usage": float((counts > 0).double().mean()),
        "dead_codes": int((counts == 0).sum()),
        "perplexity": float(entropy.exp()),
    }


def fullsize_recon_psnr(prior, root: Path, params: Params, device) -> float | None:
    """Mean reconstruction PSNR (dB) of the prior on the whole val-split photos of the pool (each
    cropped to a multiple of the prior's stride), or None without val photos or photos.csv. Patches hide what a
    prior does to large smooth areas and to edges between textures; whole photos show it."""
    import pandas as pd
    import torch

    from pipeline.evaluation.metrics import batch_psnr
    from pipeline.io import load_png
    from pipeline.training.data import to_tensor
    from pipeline.training.loop import to_device

    table = root / params.paths.curated / layout.PHOTOS
    if not table.is_file():  # patches without their photos (a hand-made workspace): nothing to score
        return None
    photos = pd.read_csv(table)
    scores = []
    with torch.inference_mode():
        for image_id in photos.loc[photos["split"] == "val", "image_id"]:
            image = load_png(root / params.paths.pool / "images" / f"{image_id}.png")
            height, width = (side - side % prior.stride for side in image.shape[:2])
            clean = to_device(to_tensor(image[None, :height, :width]), device)
            scores.append(float(batch_psnr(prior(clean)[0], clean)[0]))
    return round(float(np.mean(scores)), 4) if scores else None


def run_prior(params: Params, root: Path, show_progress: bool = True) -> dict:
    """Train (or, for a pretrained autoencoder, measure) the prior described by `params.prior` and
    write `{prior}/` (see the module docstring)."""
    from pipeline.training.loop import torch_settings

    with torch_settings(params.prior.threads):
        if params.prior.model.type == "pretrained_autoencoder":
            return _adopt_pretrained_prior(params, Path(root), show_progress)
        return _train_prior(params, Path(root), show_progress)


def _adopt_pretrained_prior(params: Params, root: Path, show_progress: bool) -> dict:
    """Measure the user's autoencoder on the validation patches and store it in `{prior}/` (no training)."""
    import time

    import torch

    from pipeline.io import atomic_path, save_png, write_csv, write_json
    from pipeline.models.factory import prior_checkpoint
    from pipeline.models.pretrained_prior import CONFIG_FILE, WEIGHTS_FILE, load_pretrained_prior, model_directory
    from pipeline.training.checkpoint import file_digest
    from pipeline.training.data import load_patches
    from pipeline.training.loop import select_device

    began = time.perf_counter()
    spec = params.prior.model
    curated, out_dir = root / params.paths.curated, root / params.paths.prior
    directory = model_directory(spec, root)
    source = {"path": str(directory.resolve()), "kind": spec.kind, "sha256": file_digest(directory / WEIGHTS_FILE),
              "config_sha256": file_digest(directory / CONFIG_FILE)}
    prior = load_pretrained_prior(spec, root)
    val_patches = load_patches(curated / layout.PATCHES_VAL, prior.stride)
    device = select_device()
    prior.to(device, memory_format=torch.channels_last)
    metrics = {**prior_scores(prior, val_patches, device, show_progress),
               "recon_psnr_fullsize": fullsize_recon_psnr(prior, root, params, device), "val_patches": len(val_patches), "iterations": 0,
               "parameters": sum(p.numel() for p in prior.parameters()), "seconds": round(time.perf_counter() - began, 2)}
    sample = val_patches[np.linspace(0, len(val_patches) - 1, min(8, len(val_patches))).round().astype(int)]
    save_png(out_dir / layout.RECON, recon_sheet(sample, reconstruct(prior, sample, device)[0]))
    with atomic_path(out_dir / layout.PRIOR) as tmp:
        torch.save(prior_checkpoint(prior.cpu(), source), tmp)
    write_csv(out_dir / layout.LOG, [{"step": 0, "val_recon_psnr": metrics["recon_psnr"]}])
    write_json(out_dir / layout.METRICS, {**metrics, "source": source})  # a tracked output: lineage reads it
    (out_dir / layout.CHECKPOINT).unlink(missing_ok=True)  # a VQ training's resume state no longer applies
    return {"prior": str(out_dir / layout.PRIOR), "device": str(device), "source": source["path"], **metrics}


def _train_prior(params: Params, root: Path, show_progress: bool) -> dict:
    import torch
    import torch.nn.functional as F
    from timm.optim import create_optimizer_v2
    from timm.scheduler import CosineLRScheduler

    from pipeline.io import atomic_path, save_png, write_csv, write_json
    from pipeline.models.factory import create_model, prior_checkpoint
    from pipeline.models.vq import PatchDiscriminator
    from pipeline.seeds import numpy_rng, torch_generator
    from pipeline.training.checkpoint import code_digest, file_digest, load_state, save_state
    from pipeline.training.train import TRAIN_CODE
    from pipeline.training.data import load_patches, random_crops, to_tensor
    from pipeline.training.live_log import LiveRun, flatten
    from pipeline.training.loop import run_iterations, select_device, to_device

    cfg = params.prior
    curated, out_dir = root / params.paths.curated, root / params.paths.prior
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
    rows: list[dict] = []

    checkpoint_path = out_dir / layout.CHECKPOINT
    fingerprint = {"prior": cfg.model_dump(mode="json"), "seed": params.seed,
                   "patches_prior": file_digest(curated / layout.PATCHES_PRIOR), "code": code_digest(*TRAIN_CODE)}
    state = load_state(checkpoint_path, fingerprint)
    start = 0
    if state is not None:
        start, rows = state["step"], list(state["rows"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.step_update(start)
        usage.copy_(state["usage"])
        if discriminator is not None:
            discriminator.load_state_dict(state["discriminator"])
            disc_optimizer.load_state_dict(state["disc_optimizer"])

    def make_batch(step: int):
        rng = numpy_rng(params.seed, "prior/batch", step)
        return to_tensor(random_crops(train_patches, cfg.batch_size, train_patches.shape[1], True, rng))

    def train_step(step: int, batch) -> dict[str, float]:
        model.train()
        clean = to_device(batch, device)
        latent = model.encode(clean)
        reseeded = 0
        if cfg.restart_every and step % cfg.restart_every == 0 and step < RESTART_FRACTION * cfg.iterations:
            reseeded = reseed_unused_codes(model.quantizer, latent.detach(), usage, torch_generator(params.seed, "prior/restart", step))
            usage.zero_()
        quantized = model.quantizer(latent)
        recon = model.decode(quantized.latent)
        l1 = F.l1_loss(recon, clean)
        loss = l1 + quantized.codebook_loss + cfg.commitment_weight * quantized.commitment_loss
        if discriminator is not None:
            loss = loss - cfg.discriminator_weight * discriminator(recon).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step_update(step + 1)
        if discriminator is not None:
            disc_loss = F.relu(1 - discriminator(clean)).mean() + F.relu(1 + discriminator(recon.detach())).mean()
            disc_optimizer.zero_grad(set_to_none=True)
            disc_loss.backward()
            disc_optimizer.step()
        usage.add_(torch.bincount(quantized.codes.flatten(), minlength=usage.numel()))
        return {"loss": loss.item(), "l1": l1.item(), "commitment": quantized.commitment_loss.item(), "reseeded": float(reseeded)}

    subset = val_patches[np.linspace(0, len(val_patches) - 1, min(VAL_SUBSET, len(val_patches))).round().astype(int)]

    def on_interval(step: int, train_scalars: dict[str, float]) -> None:
        model.eval()
        scores = prior_scores(model, subset, device)
        rows.append({"step": step, **train_scalars, "val_recon_psnr": scores["recon_psnr"], "val_codebook_usage": scores["codebook_usage"]})
        if step < cfg.iterations:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "usage": usage.cpu(), "rows": rows}
            if discriminator is not None:
                state.update(discriminator=discriminator.state_dict(), disc_optimizer=disc_optimizer.state_dict())
            save_state(checkpoint_path, fingerprint, step, state)
        if live is not None:
            live.log_rows(rows[-1:])

    # The prior's own MLflow run, opened now: its curves arrive as it trains (live_log.py).
    live = LiveRun.start("prior", f"prior {cfg.model.type}", {"seed": str(params.seed), **flatten("prior", cfg.model_dump(mode="json"))}, root)
    if live is not None and rows:
        live.log_rows(rows)  # resumed: the restored part of the curve first
    try:
        timing = run_iterations(
            start=start, end=cfg.iterations, make_batch=make_batch, train_step=train_step, interval=cfg.val_every,
            on_interval=on_interval, patches_per_step=cfg.batch_size, desc="prior", show_progress=show_progress,
        )
    except BaseException:
        if live is not None:
            live.fail()
        raise

    model.eval()
    metrics = {**prior_scores(model, val_patches, device), "recon_psnr_fullsize": fullsize_recon_psnr(model, root, params, device),
               "val_patches": len(val_patches), "train_patches": len(train_patches),
               "iterations": cfg.iterations, "parameters": sum(p.numel() for p in model.parameters()), **timing.summary()}
    sample = val_patches[np.linspace(0, len(val_patches) - 1, min(8, len(val_patches))).round().astype(int)]
    save_png(out_dir / layout.RECON, recon_sheet(sample, reconstruct(model, sample, device)[0]))
    with atomic_path(out_dir / layout.PRIOR) as tmp:
        torch.save(prior_checkpoint(model.cpu()), tmp)
    write_csv(out_dir / layout.LOG, rows)
    write_json(out_dir / layout.METRICS, metrics)
    checkpoint_path.unlink(missing_ok=True)  # the run finished: nothing left to resume
    if live is not None:
        live.finish(metrics, out_dir / layout.PRIOR, cfg.iterations)
    return {"prior": str(out_dir / layout.PRIOR), "device": str(device), "resumed_from_step": start, **metrics}
