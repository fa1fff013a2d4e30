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
from dataclasses import dataclass
from pathlib import Path

from pipeline import layout
from pipeline.config import PRIOR_ARCHITECTURES, Params

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
    """Every process trains its share of each batch; rank 0 validates, logs and writes `{model}/`."""
    from pipeline.training.live_log import flatten
    from pipeline.training.loop import select_device, start_distributed, stop_distributed
    from pipeline.training.session import TrainingSession

    cfg = params.train
    device = select_device()
    dist = start_distributed(device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"train.batch_size={cfg.batch_size} must be divisible by the number of processes ({dist.world_size})")
    trainer, fingerprint = _build_trainer(params, root, device, dist)
    session = TrainingSession(root / params.paths.model, fingerprint, cfg.iterations, trainer.state_parts(), main=dist.is_main)
    if session.resume():
        trainer.scheduler.step_update(session.start)
    session.open_live("derain", f"derain {cfg.model.type}", {
        **flatten("", {"seed": params.seed, "evaluate": {"mask_threshold": params.evaluate.mask_threshold}}),
        **flatten("train", cfg.model_dump(mode="json"))}, root)
    trainer.wrap_distributed()
    try:
        timing = session.run(trainer.make_batch, trainer.train_step, trainer.validate, interval=cfg.val_every,
                             patches_per_step=cfg.batch_size, desc="train", show_progress=show_progress)
    except BaseException:
        stop_distributed(dist, wait=False)  # the other processes may be gone: no barrier
        raise
    stop_distributed(dist)
    if not dist.is_main:
        return {"rank": dist.rank, "note": "rank 0 writes the outputs"}
    metrics = trainer.final_metrics(session.rows[-1], session.start, timing)
    weights = session.finish(layout.MODEL, trainer.weights_payload(), metrics)
    return {"model": str(weights), "device": str(device), **metrics}


def _build_trainer(params: Params, root: Path, device, dist) -> tuple[DerainTrainer, dict]:
    """The run's objects, created in the order that fixes the weight initialisation, and its
    fingerprint (what decides the result, besides the code: checkpoint.py)."""
    import torch
    from timm.optim import create_optimizer_v2
    from timm.scheduler import MultiStepLRScheduler
    from timm.utils import ModelEmaV3

    from pipeline.models.factory import create_model
    from pipeline.training.checkpoint import file_digest
    from pipeline.training.data import load_patches, load_suite

    cfg, paths = params.train, params.paths
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
    fingerprint = {
        "train": cfg.model_dump(mode="json"),
        "seed": seed,
        "processes": dist.world_size,
        "patches_train": file_digest(patches_path),
        "prior": file_digest(prior_path) if prior_path else None,
        "mask_threshold": params.evaluate.mask_threshold,  # in the loss
    }
    trainer = DerainTrainer(params, device, dist, seed, prior, model, patches, suites, optimizer, scheduler, ema,
                            trainable=sum(p.numel() for p in trainable))
    return trainer, fingerprint


@dataclass
class DerainTrainer:
    """One derain training run's objects, and what it does per step, per interval and at the end.

    `network` is the model, or its DistributedDataParallel wrapper under torchrun (wrap_distributed);
    `ema.module` holds the EMA weights, which are validated and written.
    """

    params: Params
    device: object
    dist: object  # loop.Distributed
    seed: int
    prior: object | None  # the trained prior a prior-constrained model renders through
    model: object
    patches: object  # uint8 (N, P, P, 3) training patches
    suites: list  # data.Suite validation suites (empty on ranks other than 0)
    optimizer: object
    scheduler: object
    ema: object
    trainable: int  # number of trainable parameters
    network: object = None

    def __post_init__(self) -> None:
        self.network = self.model

    def state_parts(self) -> dict[str, object]:
        """What a checkpoint holds besides the step and the rows (session.TrainingSession.parts)."""
        return {"model": self.model, "ema": self.ema.module, "optimizer": self.optimizer, "scheduler": self.scheduler}

    def wrap_distributed(self) -> None:
        if self.dist.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)

    def make_batch(self, step: int):
        """(clean, rainy, rain layer) float32 NCHW: this process's crops of step `step`, rain added on the model's device."""
        from pipeline.seeds import numpy_rng, torch_generator
        from pipeline.synthesis.rain import rainify_batch
        from pipeline.training.data import random_crops, to_tensor

        cfg, rank = self.params.train, self.dist.rank
        local_batch = cfg.batch_size // self.dist.world_size
        crops = random_crops(self.patches, local_batch, cfg.crop_size, cfg.augment, numpy_rng(self.seed, "train/crops", step, rank))
        clean = to_tensor(crops).to(self.device, non_blocking=True)  # rain is synthesized where the model runs
        rainy, layer = rainify_batch(clean, list(cfg.rain.presets), cfg.rain.probability, torch_generator(self.seed, "train/rain", step, rank))
        return clean, rainy, layer

    def train_step(self, step: int, batch) -> dict[str, float]:
        """One optimisation step, the schedule and the EMA; returns the loss, its terms and the lr."""
        from pipeline.training.loop import to_device

        cfg = self.params.train
        self.network.train()
        clean, rainy, layer = (to_device(t, self.device) for t in batch)
        loss, terms = training_loss(self.network, rainy, clean, cfg.latent_weight, layer, cfg.mask_weight,
                                    self.params.evaluate.mask_threshold, cfg.mask_target, cfg.branch_weight,
                                    cfg.mask_negative_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step_update(step + 1)
        self.ema.update(self.model, step=step + 1)
        return {"loss": loss.item(), **{k: v.item() for k, v in terms.items()}, "lr": self.optimizer.param_groups[0]["lr"]}

    def validate(self) -> dict[str, float]:
        """`<psnr|psnr_rain|psnr_bg>/<suite>` (dB) of the EMA weights on each validation suite."""
        from pipeline.training.loop import suite_scores

        self.ema.module.eval()
        scores = {}
        for suite in self.suites:
            for key, value in suite_scores(self.ema.module, suite, self.params.evaluate.mask_threshold, self.device).items():
                scores[f"{key}/{suite.name}"] = value
        return scores

    def final_metrics(self, final: dict, start: int, timing) -> dict:
        """metrics.json: the last validation, the rainy inputs' scores and the gain over them, bookkeeping."""
        from pipeline.evaluation.metrics import image_set_scores

        metrics = {key: value for key, value in final.items() if "/" in key}
        for suite in self.suites:
            for key, value in image_set_scores(suite.rainy, suite, self.params.evaluate.mask_threshold).items():
                metrics[f"{key}_input/{suite.name}"] = value
            gain = metrics[f"psnr_rain/{suite.name}"] - metrics[f"psnr_rain_input/{suite.name}"]
            metrics[f"psnr_rain_gain/{suite.name}"] = gain if math.isfinite(gain) else math.nan
        metrics.update(final_loss=final["loss"], iterations=self.params.train.iterations, resumed_from_step=start,
                       processes=self.dist.world_size, parameters=sum(p.numel() for p in self.model.parameters()),
                       trainable_parameters=self.trainable, **timing.summary())
        return metrics

    def weights_payload(self) -> dict:
        """model.pt's contents: the EMA weights on the CPU with the architecture (and the prior's spec)."""
        from pipeline.models.factory import derain_checkpoint

        weights = {k: v.detach().cpu() for k, v in self.ema.module.state_dict().items()}
        prior = self.prior
        return derain_checkpoint(self.params.train.model, weights, prior.spec if prior is not None else None,
                                 getattr(prior, "diffusers_config", None))
