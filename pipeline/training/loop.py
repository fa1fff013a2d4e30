"""What both training steps share: device and threads, the iteration loop, suite validation.

The loop draws batch k for step k from a prefetching thread, runs one optimisation step, shows a
tqdm bar (loss, patches/s) on stderr, and every `interval` steps (and at the end) calls back for
validation and a checkpoint. It measures where the time goes: waiting for data vs computing.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from pipeline.training.data import Prefetcher, Suite


def select_device():
    """CUDA when present (RAINCHECK_DEVICE overrides, e.g. `cpu`), else the CPU.

    Under torchrun each process takes the GPU of its LOCAL_RANK.
    """
    import torch

    requested = os.environ.get("RAINCHECK_DEVICE")
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextlib.contextmanager
def torch_settings(threads: int) -> Iterator[None]:
    """Intra-op threads from params and TF32 on a GPU, restored afterwards (a step may run in-process)."""
    import torch

    previous = (torch.get_num_threads(), torch.backends.cudnn.benchmark,
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = False  # deterministic algorithm choice: resumes match
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous[1:]


def mean_rows(values: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each key over a list of scalar dicts."""
    keys = values[0].keys() if values else []
    return {key: float(np.mean([v[key] for v in values])) for key in keys}


@dataclass
class LoopTiming:
    """Seconds spent: total, waiting for batches, preparing them (in the prefetch thread), validating."""

    total: float = 0.0
    data_wait: float = 0.0
    data_produce: float = 0.0
    validation: float = 0.0
    steps: int = 0
    patches: int = 0

    def summary(self) -> dict[str, float]:
        train_seconds = max(self.total - self.validation, 1e-9)
        return {
            "seconds": round(self.total, 2),
            "seconds_validation": round(self.validation, 2),
            "seconds_data_wait": round(self.data_wait, 2),
            "seconds_data_prepare": round(self.data_produce, 2),
            "patches_per_s": round(self.patches / train_seconds, 2),
        }


def run_iterations(
    *,
    start: int,
    end: int,
    make_batch: Callable[[int], object],
    train_step: Callable[[int, object], dict[str, float]],
    interval: int,
    on_interval: Callable[[int, dict[str, float]], None],
    patches_per_step: int,
    desc: str,
    show_progress: bool = True,
) -> LoopTiming:
    """Run steps start..end-1; `on_interval(step_done, mean_train_scalars)` every `interval` and at the end.

    `train_step(step, batch)` returns scalars (the key `loss` is shown on the bar).
    """
    from tqdm import tqdm

    timing = LoopTiming()
    began = time.perf_counter()
    prefetcher = Prefetcher(make_batch, start, end)
    since_interval: list[dict[str, float]] = []
    bar = tqdm(total=end, initial=start, desc=desc, unit="it", mininterval=1.0, disable=not show_progress)
    window_start, window_patches = time.perf_counter(), 0
    try:
        for step in range(start, end):
            batch = prefetcher.get(step)
            scalars = train_step(step, batch)
            if not all(math.isfinite(v) for v in scalars.values()):
                raise FloatingPointError(f"{desc}: non-finite training scalars at step {step}: {scalars} (lower the lr?)")
            since_interval.append(scalars)
            timing.steps += 1
            timing.patches += patches_per_step
            window_patches += patches_per_step
            now = time.perf_counter()
            bar.set_postfix(loss=f"{scalars['loss']:.4f}", patches_s=f"{window_patches / max(now - window_start, 1e-9):.0f}", refresh=False)
            bar.update(1)
            done = step + 1
            if done % interval == 0 or done == end:
                validation_began = time.perf_counter()
                on_interval(done, mean_rows(since_interval))
                since_interval = []
                timing.validation += time.perf_counter() - validation_began
                window_start, window_patches = time.perf_counter(), 0
    finally:
        bar.close()
        prefetcher.close()
    timing.total = time.perf_counter() - began
    timing.data_wait = prefetcher.wait_seconds
    timing.data_produce = prefetcher.produce_seconds
    return timing


def suite_scores(model, suite: Suite, threshold: int, device=None) -> dict[str, float]:
    """Mean whole-image, rain-region and background PSNR (dB) of `model` on a suite (NaN-free means).

    The model's uint8 outputs are scored by pipeline.evaluation.metrics.image_set_scores, the
    evaluate step's metrics (rain region R > threshold, binary mask).
    """
    from pipeline.evaluation.metrics import image_set_scores
    from pipeline.inference import derain_array

    outputs = [derain_array(model, rainy, device=device) for rainy in suite.rainy]
    return image_set_scores(outputs, suite, threshold)


def to_device(tensor, device):
    """Move a float32 NCHW tensor to `device` in channels_last memory (faster convolutions)."""
    import torch

    return tensor.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_distributed(device) -> Distributed:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def stop_distributed(context: Distributed, wait: bool = True) -> None:
    """Leave the process group (after all processes arrive, unless `wait` is False)."""
    import torch.distributed as dist

    if context.world_size > 1 and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
