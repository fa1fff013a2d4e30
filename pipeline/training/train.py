"""`train` step: the deraining network, with rain added to every clean crop on the fly.

Reads `{curated}/patches_train.npy`, `{prior}/prior.pt` (for architectures that render through
the prior) and the validation suites `{suites}/<suite>/` of `params.evaluate.suites`; writes
`{model}/model.pt` (EMA weights, self-contained), `metrics.json` and `log.csv`
(docs/dataflow.md). The recipe (method.md): L1 (+ latent matching for `prior_resnet`), Adam,
multistep ×0.5 at the milestone fractions, EMA of the weights, rain on each crop with probability
`train.rain.probability`. An interrupted run resumes from `{model}/checkpoint.pt` and reaches the
same weights as an uninterrupted one.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline import layout
from pipeline.config import PRIOR_ARCHITECTURES, Params

# The code whose change makes an interrupted run's checkpoint stale (a subset of the train stage's deps).
TRAIN_CODE = tuple(Path(__file__).resolve().parents[1] / name for name in ("training", "models", "synthesis", "config.py", "params", "seeds.py"))
EMA_WARMUP_POWER = 2 / 3  # timm's EMA warmup: decay 1 - (1 + step)^-p, capped at train.ema_decay


def load_matching_prior(params: Params, root: Path):
    """The trained prior for a prior-constrained model; refuses one that params no longer describe."""
    from pipeline.models.factory import CheckpointError, load_prior

    path = root / params.paths.prior / layout.PRIOR
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained prior (run the prior step first); train.model.type "
                                f"{params.train.model.type!r} renders through it")
    prior = load_prior(path)
    if prior.spec != params.prior.model:
        raise CheckpointError(
            f"{path} was trained with {prior.spec.model_dump()} but params.yaml prior.model is "
            f"{params.prior.model.model_dump()}: the latent shapes may not match; re-run the prior step"
        )
    return prior, path


def mask_target(layer, threshold: float, kind: str = "soft"):
    """The rain mask a masked model should predict, float32 (N, 1, H, W) in [0, 1].

    layer: the synthesized rain layer R, float32 N1HW in [0, 255]. `soft`: R / threshold clipped
    to [0, 1] (pixels at the evaluation's mask threshold and above are rain, lighter rain is
    partly rain); `binary`: exactly the evaluation's mask R > threshold, so the faint tails of a
    streak are left to the input instead of being re-drawn.
    """
    if kind == "binary":
        return (layer > threshold).float()
    return (layer / float(threshold)).clamp(0.0, 1.0)


def training_loss(model, rainy, clean, latent_weight: float, layer=None, mask_weight: float = 0.0, threshold: float = 50,
                  target_kind: str = "soft", branch_weight: float = 0.0, negative_weight: float = 1.0):
    """L1(output, clean) [+ latent_weight · MSE(predicted latent, prior latent of clean)]
    [+ mask_weight · BCE(predicted rain mask, mask_target(layer)), pixels with no rain at all
    weighted by `negative_weight`] [+ branch_weight · L1(the masked model's re-drawing P(x), clean)];
    returns (loss, {term: value}).
    """
    import torch.nn.functional as F

    base = model.module if hasattr(model, "module") else model
    output, latent = model(rainy, return_latent=True)
    l1 = F.l1_loss(output, clean)
    loss, terms = l1, {"l1": l1}
    if latent is not None and latent_weight > 0:
        terms["latent"] = F.mse_loss(latent, base.target_latent(clean))
        loss = loss + latent_weight * terms["latent"]
    aux = getattr(base, "aux", {})
    logits = aux.get("mask_logits")
    if logits is not None and layer is not None and mask_weight > 0:
        target = mask_target(layer, threshold, target_kind)
        # A false alarm repaints a dry pixel the input had right; weighting the rain-free pixels
        # up trades a little recall on faint rain for a background that comes back untouched.
        weight = None if negative_weight == 1.0 else 1.0 + (negative_weight - 1.0) * (layer <= 0).float()
        terms["mask"] = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
        loss = loss + mask_weight * terms["mask"]
    if "drawn" in aux and branch_weight > 0:
        terms["branch"] = F.l1_loss(aux["drawn"], clean)
        loss = loss + branch_weight * terms["branch"]
    return loss, terms


def run_train(params: Params, root: Path, show_progress: bool = True) -> dict:
    """Train `params.train.model` and write `{model}/` (see the module docstring); returns a summary.

    Under `torchrun --nproc_per_node N -m pipeline train`, each process trains on
    batch_size / N crops per step with gradients averaged (DistributedDataParallel), with
    threads / N CPU threads; only rank 0 validates and writes files.
    """
    import os

    from pipeline.training.loop import torch_settings

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    with torch_settings(max(1, params.train.threads // processes)):
        return _train(params, Path(root), show_progress)


def _train(params: Params, root: Path, show_progress: bool) -> dict:
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import MultiStepLRScheduler
    from timm.utils import ModelEmaV3

    from pipeline.io import atomic_path, write_csv, write_json
    from pipeline.models.factory import create_model, derain_checkpoint
    from pipeline.seeds import numpy_rng, torch_generator
    from pipeline.synthesis.rain import rainify_batch
    from pipeline.training.checkpoint import code_digest, file_digest, load_state, save_state
    from pipeline.training.data import load_patches, load_suite, random_crops, to_tensor
    from pipeline.training.live_log import LiveRun, flatten
    from pipeline.evaluation.metrics import image_set_scores
    from pipeline.training.loop import run_iterations, select_device, start_distributed, stop_distributed, suite_scores, to_device

    cfg, paths = params.train, params.paths
    device = select_device()
    dist = start_distributed(device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the number of processes ({dist.world_size})")
    local_batch = cfg.batch_size // dist.world_size

    prior = prior_path = None
    if cfg.model.type in PRIOR_ARCHITECTURES:
        prior, prior_path = load_matching_prior(params, root)
    seed = params.seed if cfg.seed is None else cfg.seed  # train.seed: the study's per-cell seed
    torch.manual_seed(seed)  # weight initialisation (identical in every process)
    model = create_model(cfg.model, prior=prior, root=root).to(device, memory_format=torch.channels_last)
    if cfg.crop_size % model.stride:
        raise ValueError(f"train.crop_size={cfg.crop_size} must be divisible by the {cfg.model.type} model's stride {model.stride}")
    patches_path = root / paths.curated / layout.PATCHES_TRAIN
    patches = load_patches(patches_path)
    if cfg.crop_size > patches.shape[1]:
        raise ValueError(f"train.crop_size={cfg.crop_size} is larger than the training patches ({patches.shape[1]}px, curate.patch_size)")
    # Validation on suites built from the val split (train.val_suites): the test suites stay unseen.
    suites = [load_suite(root / paths.suites / name) for name in cfg.val_suites] if dist.is_main else []

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = create_optimizer_v2(trainable, opt="adam", lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=0.0)
    milestones = sorted({max(1, round(m * cfg.iterations)) for m in cfg.milestones})
    scheduler = MultiStepLRScheduler(optimizer, decay_t=milestones, decay_rate=0.5, t_in_epochs=False)
    ema = ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=True, warmup_power=EMA_WARMUP_POWER)
    rows: list[dict] = []

    checkpoint_path = root / paths.model / layout.CHECKPOINT
    fingerprint = {
        "train": cfg.model_dump(mode="json"),
        "seed": seed,
        "processes": dist.world_size,
        "patches_train": file_digest(patches_path),
        "prior": file_digest(prior_path) if prior_path else None,
        "mask_threshold": params.evaluate.mask_threshold,  # in the loss
        "code": code_digest(*TRAIN_CODE),
    }
    state = load_state(checkpoint_path, fingerprint)
    start = 0
    if state is not None:
        start, rows = state["step"], list(state["rows"])
        model.load_state_dict(state["model"])
        ema.module.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.step_update(start)
    # The MLflow run is opened now, so its duration and its curves are the training's (rank 0 only).
    live = LiveRun.start("derain", f"derain {cfg.model.type}", {
        **flatten("", {"seed": params.seed, "evaluate": {"mask_threshold": params.evaluate.mask_threshold}}),
        **flatten("train", cfg.model_dump(mode="json"))}, root) if dist.is_main else None
    if live is not None and rows:
        live.log_rows(rows)  # resumed: the restored part of the curve first
    network = model
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def make_batch(step: int):
        crops = random_crops(patches, local_batch, cfg.crop_size, cfg.augment, numpy_rng(seed, "train/crops", step, dist.rank))
        clean = to_tensor(crops).to(device, non_blocking=True)  # rain is synthesized where the model runs
        rain_generator = torch_generator(seed, "train/rain", step, dist.rank)
        rainy, layer = rainify_batch(clean, list(cfg.rain.presets), cfg.rain.probability, rain_generator)
        return clean, rainy, layer

    def train_step(step: int, batch) -> dict[str, float]:
        network.train()
        clean, rainy, layer = (to_device(t, device) for t in batch)
        loss, terms = training_loss(network, rainy, clean, cfg.latent_weight, layer, cfg.mask_weight,
                                    params.evaluate.mask_threshold, cfg.mask_target, cfg.branch_weight,
                                    cfg.mask_negative_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step_update(step + 1)
        ema.update(model, step=step + 1)
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "lr": optimizer.param_groups[0]["lr"]}

    def validate() -> dict[str, float]:
        ema.module.eval()
        scores = {}
        for suite in suites:
            for key, value in suite_scores(ema.module, suite, params.evaluate.mask_threshold, device).items():
                scores[f"{key}/{suite.name}"] = value
        return scores

    def on_interval(step: int, train_scalars: dict[str, float]) -> None:
        if not dist.is_main:
            return
        rows.append({"step": step, **train_scalars, **validate()})
        if live is not None:
            live.log_rows(rows[-1:])
        if step < cfg.iterations:
            save_state(checkpoint_path, fingerprint, step, {
                "model": model.state_dict(), "ema": ema.module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rows": rows,
            })

    try:
        timing = run_iterations(
            start=start, end=cfg.iterations, make_batch=make_batch, train_step=train_step, interval=cfg.val_every,
            on_interval=on_interval, patches_per_step=cfg.batch_size, desc="train",
            show_progress=show_progress and dist.is_main,
        )
    except BaseException:
        if live is not None:
            live.fail()
        stop_distributed(dist, wait=False)  # the other processes may be gone: no barrier
        raise
    stop_distributed(dist)
    if not dist.is_main:
        return {"rank": dist.rank, "note": "rank 0 writes the outputs"}

    final = rows[-1]
    metrics = {key: value for key, value in final.items() if "/" in key}
    for suite in suites:
        for key, value in image_set_scores(suite.rainy, suite, params.evaluate.mask_threshold).items():
            metrics[f"{key}_input/{suite.name}"] = value
        gain = metrics[f"psnr_rain/{suite.name}"] - metrics[f"psnr_rain_input/{suite.name}"]
        metrics[f"psnr_rain_gain/{suite.name}"] = gain if math.isfinite(gain) else math.nan
    metrics.update(final_loss=final["loss"], iterations=cfg.iterations, resumed_from_step=start, processes=dist.world_size,
                   parameters=sum(p.numel() for p in model.parameters()),
                   trainable_parameters=sum(p.numel() for p in trainable), **timing.summary())

    out_dir = root / paths.model
    weights = {k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
    with atomic_path(out_dir / layout.MODEL) as tmp:
        torch.save(derain_checkpoint(cfg.model, weights, prior.spec if prior is not None else None,
                                     getattr(prior, "diffusers_config", None)), tmp)
    write_csv(out_dir / layout.LOG, rows)
    write_json(out_dir / layout.METRICS, metrics)
    checkpoint_path.unlink(missing_ok=True)  # the run finished: nothing left to resume
    if live is not None:
        live.finish(metrics, out_dir / layout.MODEL, cfg.iterations)
    return {"model": str(out_dir / layout.MODEL), "device": str(device), **metrics}
