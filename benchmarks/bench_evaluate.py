"""Evaluation/inference speed and memory of the default deraining model (randomly initialised,
its rain mask forced open: the timings are a rainy photo's, the whole forward).

Measures, on this machine's CPU (or GPU with --device cuda):
- throughput in images/s at 512² and 1024² (`derain_batch`, the evaluate step's path);
- latency of one 1024² image (`derain_array`, the serving path), for several tile edges;
- peak resident memory while deraining one 4096² image, in a fresh process (so earlier
  measurements do not inflate it), beside the same process's memory before the image.

The architecture comes from params.yaml (train.model, prior.model); tiling from evaluate.tile and
evaluate.overlap. Weights are random: speed and memory do not depend on them.

    python benchmarks/bench_evaluate.py [--params params.yaml] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_model(params_path: Path, device: str):
    """The params' deraining architecture with random weights, in eval mode on `device`."""
    from pipeline.config import PRIOR_ARCHITECTURES, load_params
    from pipeline.models.factory import create_model

    params = load_params(params_path)
    prior = create_model(params.prior.model) if params.train.model.type in PRIOR_ARCHITECTURES else None
    model = create_model(params.train.model, prior=prior) if prior is not None else create_model(params.train.model)
    return open_mask(model).eval().to(device), params


def open_mask(model):
    """The model with its rain-mask head (if any) marking every pixel. Random weights leave the head
    shut (its bias starts under the deadzone), and a batch with nothing to re-draw skips the branch:
    opened, the timings are those of a rainy photo (the whole forward), the slower case."""
    import torch

    head = getattr(model, "mask_head", None)
    if head is not None:
        with torch.no_grad():
            head.to_logits.bias.fill_(10.0)
    return model


def random_images(count: int, side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, side, side, 3), dtype=np.uint8)


def throughput(model, side: int, count: int, batch_size: int, tile: int, overlap: int, device: str) -> float:
    """Images per second over `count` random side² images (after one warm-up image)."""
    from pipeline.inference import derain_batch

    images = random_images(count, side)
    derain_batch(model, images[:1], batch_size, tile, overlap, device)
    start = time.perf_counter()
    derain_batch(model, images, batch_size, tile, overlap, device)
    return count / (time.perf_counter() - start)


def latency(model, side: int, tile: int, overlap: int, device: str, repeats: int) -> float:
    """Median seconds for one side² image through `derain_array` (after a warm-up)."""
    from pipeline.inference import derain_array

    image = random_images(1, side)[0]
    derain_array(model, image, tile, overlap, device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        derain_array(model, image, tile, overlap, device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def current_rss_mib() -> float:
    """Resident memory of this process now (Linux /proc), in MiB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_memory_child(params_path: Path, side: int, tile: int, overlap: int, device: str) -> dict:
    """Run in a fresh process: RSS (MiB) before, and its peak while deraining one side² image.

    The peak is sampled every 5 ms by a thread, because the process's lifetime maximum
    (ru_maxrss) is dominated by importing the CUDA build of torch, not by the image.
    """
    from pipeline.inference import derain_array

    model, _ = build_model(params_path, device)
    image = random_images(1, side)[0]
    before = current_rss_mib()
    peak, running = [before], threading.Event()
    running.set()

    def sample() -> None:
        while running.is_set():
            peak[0] = max(peak[0], current_rss_mib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    output = derain_array(model, image, tile, overlap, device)
    seconds = time.perf_counter() - start
    running.clear()
    sampler.join()
    return {
        "side": side,
        "tile": tile,
        "image_mib": round(image.nbytes / 2**20),
        "output_mib": round(output.nbytes / 2**20),
        "rss_before_mib": round(before),
        "rss_peak_mib": round(max(peak[0], current_rss_mib())),
        "rss_growth_mib": round(max(peak[0], current_rss_mib()) - before),
        "seconds": round(seconds, 1),
    }


def latency_child(params_path: Path, tile: int, overlap: int, device: str, repeats: int, huge_pages: bool) -> float:
    """`latency` at 1024² in a fresh process, with torch's huge-page allocation on or off (torch
    reads THP_MEM_ALLOC_ENABLE once per process): the baseline for pipeline.runtime.fast_allocation."""
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if huge_pages else "0"}
    command = [sys.executable, __file__, "--params", str(params_path), "--device", device, "--child-latency",
               str(repeats), "--tile", str(tile), "--overlap", str(overlap)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return float(result.stdout.strip().splitlines()[-1])


def peak_memory(params_path: Path, side: int, tile: int, overlap: int, device: str) -> dict:
    command = [sys.executable, __file__, "--params", str(params_path), "--device", device,
               "--child-peak", str(side), "--tile", str(tile), "--overlap", str(overlap)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats, peak memory at 2048²")
    parser.add_argument("--tile", type=int, default=None, help="tile edge (default: evaluate.tile)")
    parser.add_argument("--overlap", type=int, default=None, help="overlap (default: evaluate.overlap)")
    parser.add_argument("--child-peak", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-latency", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from pipeline.runtime import fast_allocation

    fast_allocation()  # as raincheck's CLI and served model do (a child may be told otherwise)
    import torch

    model, params = build_model(args.params, args.device)
    tile = args.tile or params.evaluate.tile
    overlap = params.evaluate.overlap if args.overlap is None else args.overlap
    if args.child_latency:
        print(latency(model, 1024, tile, overlap, args.device, args.child_latency))
        return
    if args.child_peak:
        print(json.dumps(peak_memory_child(args.params, args.child_peak, tile, overlap, args.device)))
        return

    batch_size = params.evaluate.batch_size
    repeats = 1 if args.quick else 5
    parameters = sum(p.numel() for p in model.parameters())
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")  # fmt: skip
    print(f"model: {params.train.model.type} ({parameters / 1e6:.2f} M parameters, random weights); "
          f"evaluate.tile={tile}, overlap={overlap}, batch_size={batch_size}")  # fmt: skip
    results = {}
    for side, count in ((512, 4 if args.quick else 8), (1024, 2 if args.quick else 4)):
        results[f"images_per_s_{side}"] = throughput(model, side, count, batch_size, tile, overlap, args.device)
        print(f"throughput {side}²: {results[f'images_per_s_{side}']:.2f} images/s")
    for sweep_tile in sorted({256, 512, 1024, tile}):
        results[f"latency_1024_tile{sweep_tile}_s"] = latency(model, 1024, sweep_tile, overlap, args.device, repeats)
        print(f"latency one 1024² image, tile {sweep_tile}: {results[f'latency_1024_tile{sweep_tile}_s']:.2f} s")
    for huge_pages in (False, True):
        key = f"latency_1024_tile{tile}_huge_pages_{'on' if huge_pages else 'off'}_s"
        results[key] = latency_child(args.params, tile, overlap, args.device, repeats, huge_pages)
        print(f"latency one 1024² image, tile {tile}, fresh process, huge pages {'on' if huge_pages else 'off'}: {results[key]:.2f} s")
    peak_side = 2048 if args.quick else 4096
    results["peak"] = peak_memory(args.params, peak_side, tile, overlap, args.device)
    peak = results["peak"]
    print(f"peak RSS deraining one {peak_side}² image (tile {tile}): {peak['rss_peak_mib']} MiB, "
          f"{peak['rss_growth_mib']} MiB above the process before it ({peak['rss_before_mib']} MiB, "
          f"model and the {peak['image_mib']} MiB input included); output {peak['output_mib']} MiB; {peak['seconds']} s")  # fmt: skip
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main()
