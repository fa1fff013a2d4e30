"""`prior` step: pre-train the VQ autoencoder content prior on clean curated patches, or adopt the
user's own pre-trained autoencoder (`prior.model.type: pretrained_autoencoder`).

Reads `{curated}/patches_prior.npy` and `patches_val.npy`; writes `{prior}/prior.pt`,
`metrics.json` (recon_psnr, codebook_usage, dead_codes, ...), `log.csv` and `recon.png`
(docs/dataflow.md). A pretrained autoencoder is not trained: it is measured on the validation
patches (codebook measures: null, not applicable), stored self-contained in prior.pt (weights +
diffusers config), with its origin under `source` in `metrics.json` (path, sha256 of the weights
file and of config.json) for the lineage.

The VQ training itself (loss, schedule, codebook restarts) is in vq_training.py; the shared
resume / validate / finish path in session.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.config import Params
from pipeline.evaluation.report import recon_report  # the sheet lives with the other report pictures


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


def evenly_spaced(patches: np.ndarray, count: int) -> np.ndarray:
    """Up to `count` patches evenly spaced through `patches` (first and last included), in order."""
    return patches[np.linspace(0, len(patches) - 1, min(count, len(patches))).round().astype(int)]


def _save_recon_sheet(out_dir: Path, prior, val_patches: np.ndarray, complexity: str, device) -> None:
    """recon.png: val patches at evenly spaced quantiles of `complexity`, over their reconstructions."""
    from pipeline.io import save_png

    save_png(out_dir / layout.RECON, recon_report(val_patches, complexity, lambda tiles: reconstruct(prior, tiles, device)[0]))


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

    from pipeline.models.factory import prior_checkpoint
    from pipeline.models.pretrained_prior import CONFIG_FILE, WEIGHTS_FILE, load_pretrained_prior, model_directory
    from pipeline.training.checkpoint import file_digest
    from pipeline.training.data import load_patches
    from pipeline.training.loop import select_device
    from pipeline.training.session import write_outputs

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
    _save_recon_sheet(out_dir, prior, val_patches, params.curate.complexity, device)
    # metrics.json with the source (a tracked output: lineage reads it); a VQ training's resume state no longer applies.
    weights = write_outputs(out_dir, layout.PRIOR, prior_checkpoint(prior.cpu(), source),
                            [{"step": 0, "val_recon_psnr": metrics["recon_psnr"]}], {**metrics, "source": source})
    return {"prior": str(weights), "device": str(device), "source": source["path"], **metrics}


def _train_prior(params: Params, root: Path, show_progress: bool) -> dict:
    """Train the VQ autoencoder (resuming an interrupted run) and write `{prior}/`."""
    from pipeline.models.factory import prior_checkpoint
    from pipeline.training.checkpoint import file_digest
    from pipeline.training.live_log import flatten
    from pipeline.training.session import TrainingSession
    from pipeline.training.vq_training import build_vq_trainer

    cfg = params.prior
    curated, out_dir = root / params.paths.curated, root / params.paths.prior
    trainer = build_vq_trainer(params, curated)
    fingerprint = {"prior": cfg.model_dump(mode="json"), "seed": params.seed,
                   "patches_prior": file_digest(curated / layout.PATCHES_PRIOR)}
    session = TrainingSession(out_dir, fingerprint, cfg.iterations, trainer.state_parts())
    if session.resume():
        trainer.scheduler.step_update(session.start)
    # The prior's own MLflow run, opened now: its curves arrive as it trains (live_log.py).
    session.open_live("prior", f"prior {cfg.model.type}", {"seed": str(params.seed), **flatten("prior", cfg.model_dump(mode="json"))}, root)
    timing = session.run(trainer.make_batch, trainer.train_step, trainer.validate, interval=cfg.val_every,
                         patches_per_step=cfg.batch_size, desc="prior", show_progress=show_progress)

    model, device, val_patches = trainer.model, trainer.device, trainer.val_patches
    model.eval()
    metrics = {**prior_scores(model, val_patches, device), "recon_psnr_fullsize": fullsize_recon_psnr(model, root, params, device),
               "val_patches": len(val_patches), "train_patches": len(trainer.train_patches),
               "iterations": cfg.iterations, "parameters": sum(p.numel() for p in model.parameters()), **timing.summary()}
    _save_recon_sheet(out_dir, model, val_patches, params.curate.complexity, device)
    weights = session.finish(layout.PRIOR, prior_checkpoint(model.cpu()), metrics)
    return {"prior": str(weights), "device": str(device), "resumed_from_step": session.start, **metrics}
