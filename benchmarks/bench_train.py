"""Training throughput: patches/s and achieved FLOP/s per architecture, against this CPU's peak.

    python benchmarks/bench_train.py             # about 3 minutes on 2 cores
    python benchmarks/bench_train.py --quick     # fewer steps
    python benchmarks/bench_train.py --json FILE # also keep the numbers

For each architecture (the prior and the deraining model of params.yaml, and the other registered
deraining architectures at their default sizes), in a fresh process with `train.threads` threads
(or --threads):
one training step (forward, backward, Adam) is timed apart from the batch preparation (random
crops + on-the-fly rain), FLOPs come from torch's FlopCounterMode, and peak resident memory from
the process. The peak is a channels_last 3×3 convolution (64 → 64 channels, 64² maps, batch 16,
forward), measured in the same run. A last measurement runs the real loop (prefetch thread and
all) and reports how long the step waited for data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARCHITECTURES = {
    "prior (params.prior.model)": None,
    "derain (params.train.model)": None,
    "resnet baseline": {"type": "resnet", "channels": 32, "blocks": 4},
    "timm_unet (resnet10t)": {"type": "timm_unet", "encoder": "resnet10t", "decoder_channels": 32},
}


def conv_peak(threads: int, channels: int = 64, repeats: int = 10) -> float:
    """Best GFLOP/s of a channels_last 3×3 convolution forward (channels→channels, 64², batch 16)."""
    import torch

    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.rand(16, channels, 64, 64).contiguous(memory_format=torch.channels_last)
    flops = 2 * 16 * 64 * 64 * channels * channels * 9
    best = float("inf")
    with torch.no_grad():
        for _ in range(3):
            conv(x)
        for _ in range(repeats):
            began = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - began)
    return flops / best / 1e9


def synthetic_patches(count: int, size: int) -> np.ndarray:
    """uint8 (count, size, size, 3) smooth-plus-texture patches (speed does not depend on content)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([xx, yy, 0.5 + 0.5 * np.sin(7 * (xx + yy))], axis=-1)
    noise = rng.random((count, size, size, 1)) * 0.3
    return (np.clip(0.6 * base[None] + noise, 0, 1) * 255).astype(np.uint8)


def measure(name: str, steps: int, threads: int | None) -> dict:
    """Time one architecture's training step and batch preparation (runs in a child process).

    Times are the fastest of `steps` repeats (medians are reported beside them): on a shared
    machine the fastest repeat is the one least disturbed by other jobs.
    """
    import torch
    from timm.optim import create_optimizer_v2
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.config import PRIOR_ARCHITECTURES, load_params
    from pipeline.models.factory import create_model
    from pipeline.seeds import numpy_rng, torch_generator
    from pipeline.synthesis.rain import rainify_batch
    from pipeline.training.data import random_crops, to_tensor
    from pipeline.training.train import training_loss

    params = load_params(ROOT / "params.yaml")
    threads = threads or params.train.threads
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    is_prior = name.startswith("prior")
    spec = params.prior.model if is_prior else (ARCHITECTURES[name] or params.train.model)
    batch_size = params.prior.batch_size if is_prior else params.train.batch_size
    crop = params.curate.patch_size if is_prior else params.train.crop_size
    prior = create_model(params.prior.model).eval() if not is_prior and spec_type(spec) in PRIOR_ARCHITECTURES else None
    model = create_model(spec, prior=prior).to(memory_format=torch.channels_last).train()
    optimizer = create_optimizer_v2([p for p in model.parameters() if p.requires_grad], opt="adam", lr=1e-4)
    patches = synthetic_patches(256, params.curate.patch_size)

    def make_batch(step: int):
        clean = to_tensor(random_crops(patches, batch_size, crop, True, numpy_rng(0, "bench", step)))
        if is_prior:
            return clean, clean
        rainy, _ = rainify_batch(clean, list(params.train.rain.presets), params.train.rain.probability, torch_generator(0, "bench", step))
        return clean, rainy

    def forward(clean, rainy):
        if is_prior:
            recon, quantized = model(clean)
            return (recon - clean).abs().mean() + quantized.codebook_loss + 0.25 * quantized.commitment_loss
        return training_loss(model, rainy, clean, params.train.latent_weight)[0]

    def step(batch) -> tuple[float, float]:
        clean, rainy = (t.contiguous(memory_format=torch.channels_last) for t in batch)
        began = time.perf_counter()
        loss = forward(clean, rainy)
        forwarded = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return forwarded - began, time.perf_counter() - began

    batches = [make_batch(i) for i in range(3)]
    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    for batch in batches:
        step(batch)  # warm-up
    data_times, forward_times, step_times = [], [], []
    for i in range(steps):
        began = time.perf_counter()
        batch = make_batch(100 + i)
        data_times.append(time.perf_counter() - began)
        forward_seconds, step_seconds = step(batch)
        forward_times.append(forward_seconds)
        step_times.append(step_seconds)
    step_seconds = float(np.min(step_times))
    result = {
        "architecture": name,
        "spec": spec.model_dump() if hasattr(spec, "model_dump") else spec,
        "threads": threads,
        "batch": batch_size,
        "crop": crop,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflop_per_step": flops / 1e9,
        "step_ms": 1000 * step_seconds,
        "step_ms_median": 1000 * float(np.median(step_times)),
        "forward_ms": 1000 * float(np.min(forward_times)),
        "data_ms": 1000 * float(np.min(data_times)),
        "patches_per_s": batch_size / step_seconds,
        "gflops": flops / step_seconds / 1e9,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if name.startswith("derain"):
        result["loop"] = measure_loop(make_batch, lambda s, b: {"loss": float(step(b)[1])}, steps, batch_size)
    return result


def spec_type(spec) -> str:
    return spec["type"] if isinstance(spec, dict) else spec.type


def measure_loop(make_batch, train_step, steps: int, batch_size: int) -> dict:
    """The real loop (prefetch thread included): how long the training step waited for batches."""
    from pipeline.training.loop import run_iterations

    timing = run_iterations(start=0, end=steps, make_batch=make_batch, train_step=train_step, interval=steps + 1,
                            on_interval=lambda step, scalars: None, patches_per_step=batch_size, desc="loop",
                            show_progress=False)
    return {"patches_per_s": timing.patches / timing.total, "data_wait_fraction": timing.data_wait / timing.total,
            "data_prepare_s": timing.data_produce, "total_s": timing.total}


def child(name: str, steps: int, threads: int) -> dict:
    output = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(steps), "--threads", str(threads)],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: train.threads)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (4 if args.quick else 12)
    if args.child:
        print(json.dumps(measure(args.child, steps, args.threads)))
        return 0

    from pipeline.config import load_params

    threads = args.threads or load_params(ROOT / "params.yaml").train.threads
    load_before = os.getloadavg()[0]
    peak64, peak32 = conv_peak(threads, 64), conv_peak(threads, 32)
    results = [child(name, steps, threads) for name in ARCHITECTURES]
    load_after = os.getloadavg()[0]
    print(f"threads {threads}; channels_last 3x3 conv peak: {peak64:.1f} GFLOP/s (64 ch), {peak32:.1f} GFLOP/s (32 ch); "
          f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores\n")
    print("| architecture | params | batch×crop² | GFLOP/step | step ms: best (forward), median | data ms | patches/s | GFLOP/s | % of 64-ch peak | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['architecture']} | {r['parameters'] / 1e6:.2f} M | {r['batch']}×{r['crop']}² | {r['gflop_per_step']:.2f} | "
              f"{r['step_ms']:.0f} ({r['forward_ms']:.0f}), {r['step_ms_median']:.0f} | {r['data_ms']:.0f} | {r['patches_per_s']:.1f} | "
              f"{r['gflops']:.1f} | {100 * r['gflops'] / peak64:.0f}% | {r['peak_rss_mib']:.0f} |")
    loop = next(r["loop"] for r in results if "loop" in r)
    print(f"\nreal loop, default model: {loop['patches_per_s']:.1f} patches/s, waited for data "
          f"{100 * loop['data_wait_fraction']:.1f}% of the time (batch preparation {loop['data_prepare_s']:.2f} s "
          f"in the prefetch thread over {loop['total_s']:.1f} s)")
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops_64": peak64, "peak_gflops_32": peak32, "threads": threads,
                                         "load": [load_before, load_after], "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
