"""Rain synthesis benchmark: fidelity and speed of raincheck's engine vs a per-image OpenCV reference.

    .venv/bin/pip install -r requirements-bench.txt
    .venv/bin/python benchmarks/bench_rain.py            # full run (about 7 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_rain.py --quick    # smaller samples, for a smoke test

Sections (Markdown on stdout; --json FILE keeps the numbers):
1. exactness: engine vs reference on the same noise and parameters (share of pixels off by > 1),
   for the engine's stamping and for its FFT convolution;
2. fidelity per preset at 128² and 512²: coverage (R > 50), mean R and the measured streak angles,
   engine beside reference, each with its standard error, a z-score and a KS test on the angles;
3. speed: rain layers per second at 64², 128² and 512², engine (batched and one image at a time)
   vs the engine's torch-ops path (what CUDA runs; on CPU the engine's previous version) vs the
   reference vs albumentations and kornia RandomRain, all in one process, at 1 and 2 threads (and
   on CUDA when there is a GPU); the time per stage; the one-off cost of building stamp kernels;
4. memory: peak resident memory of synthesize_rain on a 4096² image, in copies of that image.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = ("small", "medium", "large", "random")


# ----------------------------------------------------------------------------- the reference
def reference_rain(clean: np.ndarray, preset: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """The recipe as method.md describes it, one image at a time with OpenCV/NumPy (float64).

    clean: uint8 HxWx3. Returns (rainy uint8 HxWx3, rain layer uint8 HxW, drawn parameters).
    """
    import cv2

    from pipeline.synthesis.rain import PRESET_CONFIGS

    cfg = PRESET_CONFIGS[preset]
    amount = rng.uniform(*cfg.amount)
    width = int(rng.choice(cfg.width, p=cfg.width_probs))
    length = int(rng.integers(cfg.length[0], cfg.length[1] + 1))
    low, high = cfg.angle[0]
    angle = int(rng.integers(low, high + 1))
    beta = rng.uniform(*cfg.beta)

    seeds = rng.uniform(0, 256, clean.shape[:2])
    seeds[seeds < 256 * (1 - amount)] = 0
    seeds = cv2.filter2D(seeds, -1, np.array([[0, 0.1, 0], [0.1, 8, 0.1], [0, 0.1, 0]]))
    # A length×length line through the centre (the diagonal turned by -45° is vertical at angle 0).
    rotation = cv2.getRotationMatrix2D((length / 2, length / 2), angle - 45, 1)
    kernel = cv2.warpAffine(np.diag(np.ones(length)), rotation, (length, length))
    kernel = cv2.GaussianBlur(kernel, (width, width), 0)
    layer = cv2.filter2D(seeds, -1, kernel)
    layer = cv2.normalize(layer, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    rainy = cv2.addWeighted(clean, 1, cv2.merge([layer, layer, layer]), beta, 0)
    return rainy, layer, {"amount": amount, "width": width, "length": length, "angle": angle, "beta": beta}


def reference_layer_from_noise(noise: np.ndarray, amount: float, length: int, angle: int, width: int) -> np.ndarray:
    """Reference rain layer from a given U(0,256) field (for the same-noise exactness check)."""
    import cv2

    seeds = noise.copy()
    seeds[seeds < 256 * (1 - amount)] = 0
    seeds = cv2.filter2D(seeds, -1, np.array([[0, 0.1, 0], [0.1, 8, 0.1], [0, 0.1, 0]]))
    rotation = cv2.getRotationMatrix2D((length / 2, length / 2), angle - 45, 1)
    kernel = cv2.GaussianBlur(cv2.warpAffine(np.diag(np.ones(length)), rotation, (length, length)), (width, width), 0)
    layer = cv2.filter2D(seeds, -1, kernel)
    return cv2.normalize(layer, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def background(size: int, seed: int = 0) -> np.ndarray:
    from tests.conftest import textured_photo

    return textured_photo(np.random.default_rng(seed), size, size)


# ----------------------------------------------------------------------------- measurements
def exactness(samples: int) -> list[dict]:
    """Engine vs reference on identical noise and parameters: how many pixels of R differ, for the
    engine's stamping (what it uses at the presets) and for its FFT convolution."""
    import torch

    from pipeline.synthesis.rain import draw_rain_params, render_rain_layers, resolve_rain

    rows = []
    for preset in PRESETS:
        generator = torch.Generator().manual_seed(0)
        worst, off, total = {"sparse": 0, "fft": 0}, {"sparse": 0, "fft": 0}, 0
        for _ in range(samples):
            draw = draw_rain_params(resolve_rain([preset]), 1, generator, "cpu")
            noise = torch.rand(1, 1, 128, 128, generator=generator)
            reference = reference_layer_from_noise(
                (noise[0, 0].double() * 256).numpy(), float(draw.amount[0]), int(draw.length[0]),
                int(draw.angle[0]), int(draw.width[0]),
            ).astype(int)
            for method in ("sparse", "fft"):
                engine = render_rain_layers(noise, draw, method=method)[0, 0].numpy().astype(int)
                difference = np.abs(engine - reference)
                off[method] += int((difference > 1).sum())
                worst[method] = max(worst[method], int(difference.max()))
            total += reference.size
        rows.append({
            "preset": preset, "samples": samples,
            **{f"max_abs_diff_{m}": worst[m] for m in worst},
            **{f"share_off_by_more_than_1_{m}": off[m] / total for m in off},
        })
    return rows


def _summary(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1) / math.sqrt(len(array)))


def fidelity(size: int, samples: int) -> list[dict]:
    """Per preset: coverage, mean R and streak angles from both implementations."""
    import torch
    from scipy.stats import ks_2samp

    from pipeline.synthesis.rain import measure_streak_angle, rainify_batch

    clean = background(size)
    batch = torch.from_numpy(clean).permute(2, 0, 1).float().div(255)[None]
    rows = []
    for number, preset in enumerate(PRESETS):
        # Separate streams per preset and implementation: independent samples, independent tests.
        generator = torch.Generator().manual_seed(100 + number)
        rng = np.random.default_rng(200 + number)
        engine, reference = {"cov": [], "mean": [], "angle": []}, {"cov": [], "mean": [], "angle": []}
        for start in range(0, samples, 16):
            count = min(16, samples - start)
            _, layers = rainify_batch(batch.expand(count, -1, -1, -1), [preset], 1.0, generator)
            for layer in layers[:, 0].numpy():
                engine["cov"].append(float((layer > 50).mean()))
                engine["mean"].append(float(layer.mean()))
                engine["angle"].append(measure_streak_angle(layer))
        for _ in range(samples):
            _, layer, _ = reference_rain(clean, preset, rng)
            reference["cov"].append(float((layer > 50).mean()))
            reference["mean"].append(float(layer.mean()))
            reference["angle"].append(measure_streak_angle(layer))
        row = {"size": size, "preset": preset, "samples": samples}
        for key in ("cov", "mean"):
            (m_e, se_e), (m_r, se_r) = _summary(engine[key]), _summary(reference[key])
            row[f"{key}_engine"], row[f"{key}_reference"] = m_e, m_r
            row[f"{key}_z"] = (m_e - m_r) / math.sqrt(se_e**2 + se_r**2 + 1e-24)
            row[f"{key}_se"] = math.sqrt(se_e**2 + se_r**2)
        row["angle_sd_engine"] = float(np.nanstd(engine["angle"]))
        row["angle_sd_reference"] = float(np.nanstd(reference["angle"]))
        row["angle_ks_p"] = float(ks_2samp(engine["angle"], reference["angle"]).pvalue)
        rows.append(row)
    return rows


def _rate(function, images_per_call: int, seconds: float = 2.0) -> float:
    """Images per second of `function`, after one warm-up call, over at least `seconds`."""
    function()
    calls, start = 0, time.perf_counter()
    while True:
        function()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls * images_per_call / elapsed


def _preset_kernel_keys(preset: str) -> list[tuple[int, int, int]]:
    """Every (length, angle, width) a preset can draw."""
    from pipeline.synthesis.rain import PRESET_CONFIGS

    cfg = PRESET_CONFIGS[preset]
    lengths = range(cfg.length[0], cfg.length[1] + 1)
    angles = [a for low, high in cfg.angle for a in range(low, high + 1)]
    return [(length, angle, width) for length in lengths for angle in angles for width in cfg.width]


def kernel_build_cost(preset: str = "medium") -> dict:
    """The one-off cost the speed table leaves out: building (then caching) the stamp kernels of
    every (length, angle, width) a preset can draw, 16 at a time as a cold batch would."""
    import torch

    from pipeline.synthesis import rain

    keys = torch.tensor(_preset_kernel_keys(preset))
    rain._KERNEL_CACHE.clear()
    start = time.perf_counter()
    for batch in keys.split(16):
        rain._sparse_kernels(*batch.unbind(1))
    seconds = time.perf_counter() - start
    return {"preset": preset, "kernels": len(keys), "seconds": seconds, "ms_per_kernel": 1e3 * seconds / len(keys)}


def _torch_ops_engine(batch, generator) -> None:
    """rainify_batch through torch ops only, as on CUDA (and on CPU before the compiled loops):
    input check, the same draws, stamps by scatter_add_, normalization and composite."""
    import torch

    from pipeline.synthesis import rain

    n, _, height, width = batch.shape
    torch.aminmax(batch)
    draw = rain.draw_rain_params(rain.resolve_rain(["medium"]), n, generator, "cpu")
    seeds = rain._draw_seeds(draw.amount, height, width, generator)
    kernels = rain._sparse_kernels(draw.length, draw.angle, draw.width)
    stamps = rain._stamp_positions(seeds, kernels, height, width)
    layers = rain._normalize(rain._stamp(stamps, kernels, height, width))[:, None]
    torch.addcmul(batch, layers, (draw.beta.float() / 255).view(n, 1, 1, 1)).clamp_(0, 1)


def speed(size: int, threads: int, seconds: float) -> dict:
    """Rain layers per second for each implementation on one size, with `threads` threads (torch
    and OpenCV alike); the engine's stamp kernels for the preset are built beforehand (steady state)."""
    import albumentations
    import cv2
    import kornia.augmentation
    import torch

    from pipeline.synthesis import rain
    from pipeline.synthesis.rain import rainify_batch, synthesize_rain

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    keys = torch.tensor(_preset_kernel_keys("medium"))
    rain._sparse_kernels(*keys.unbind(1))  # a training run reaches this state after a few thousand crops
    clean = background(size)
    batch_size = 16 if size <= 128 else 4
    batch = torch.from_numpy(clean).permute(2, 0, 1).float().div(255)[None].repeat(batch_size, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    seeds = iter(range(10**9))
    album = albumentations.RandomRain(p=1.0)
    korn = kornia.augmentation.RandomRain(p=1.0)
    rates = {
        "engine_batched": _rate(lambda: rainify_batch(batch, ["medium"], 1.0, generator), batch_size, seconds),
        "engine_one_image": _rate(lambda: synthesize_rain(clean, ["medium"], next(seeds)), 1, seconds),
        "engine_torch_ops": _rate(lambda: _torch_ops_engine(batch, generator), batch_size, seconds),
        "reference_opencv": _rate(lambda: reference_rain(clean, "medium", rng), 1, seconds),
        "albumentations_RandomRain": _rate(lambda: album(image=clean), 1, seconds),
        "kornia_RandomRain": _rate(lambda: korn(batch), batch_size, seconds),
    }
    if torch.cuda.is_available():
        gpu_batch = batch.cuda()
        gpu_generator = torch.Generator(device="cuda").manual_seed(0)

        def on_gpu():
            rainify_batch(gpu_batch, ["medium"], 1.0, gpu_generator)
            torch.cuda.synchronize()

        rates["engine_batched_cuda"] = _rate(on_gpu, batch_size, seconds)
    return {"size": size, "threads": threads, **rates}


def breakdown(size: int, repeats: int) -> dict:
    """Where rainify_batch's time goes at one size (1 thread, preset medium, kernels cached):
    milliseconds per layer of each stage, median over `repeats` batches, beside the reference's
    whole per-image time; and the number of (stamp, kernel entry) pairs scattered per layer."""
    import statistics

    import cv2
    import torch

    from pipeline.synthesis import rain

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    batch_size = 16 if size <= 128 else 4
    clean = background(size)
    batch = torch.from_numpy(clean).permute(2, 0, 1).float().div(255)[None].repeat(batch_size, 1, 1, 1)
    generator, rng = torch.Generator().manual_seed(1), np.random.default_rng(1)
    entries = rain.resolve_rain(["medium"])
    times: dict[str, list[float]] = {}
    pairs = []

    def timed(name, function, *args):
        start = time.perf_counter()
        result = function(*args)
        times.setdefault(name, []).append((time.perf_counter() - start) / batch_size)
        return result

    for _ in range(repeats):
        draw = timed("parameters", rain.draw_rain_params, entries, batch_size, generator, "cpu")
        seeds = timed("seeds", rain._draw_seeds, draw.amount, size, size, generator)
        kernels = timed("kernels (cached)", rain._sparse_kernels, draw.length, draw.angle, draw.width)
        per_sample = torch.bincount(seeds.sample, minlength=batch_size)
        layers = timed("stamps, mirrors, normalization (compiled)", rain._render_on_cpu, seeds, per_sample, kernels, size, size)
        weight = draw.beta.float() / 255
        timed("composite and input check (compiled)", rain._composite, batch, layers[:, None], weight)
        timed("reference, per image", lambda: [reference_rain(clean, "medium", rng) for _ in range(batch_size)])
        stamps = rain._stamp_positions(seeds, kernels, size, size)  # counted, not timed
        counts = torch.bincount(stamps[0], minlength=batch_size).tolist()
        pairs.append(sum(c * k.size for c, k in zip(counts, kernels)) / batch_size)
    milliseconds = {stage: 1e3 * statistics.median(values) for stage, values in times.items()}
    return {"size": size, "pairs_per_layer": statistics.median(pairs), **milliseconds}


def memory_4096() -> dict:
    """Peak resident memory added by synthesize_rain on a 4096² image, measured in a fresh process
    (Linux: the peak is reset through /proc/self/clear_refs once the input image exists)."""
    code = (
        "import re, time, numpy as np, torch\n"
        "torch.set_num_threads(1)\n"
        "from pipeline.synthesis.rain import synthesize_rain\n"
        "synthesize_rain(np.zeros((64, 64, 3), np.uint8), ['large'], 0)\n"  # imports and warm-up
        "image = np.empty((4096, 4096, 3), np.uint8)\n"
        "for top in range(0, 4096, 256):\n"
        "    image[top:top + 256] = np.random.default_rng(top).integers(0, 256, (256, 4096, 3), dtype=np.uint8)\n"
        "status = lambda key: int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS')\n"
        "start = time.perf_counter()\n"
        "rainy, layer, _ = synthesize_rain(image, ['large'], 1)\n"
        "print((status('VmHWM') - before) * 1024, time.perf_counter() - start)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    extra_bytes, seconds = out.stdout.split()
    image_bytes = 4096 * 4096 * 3
    return {
        "extra_peak_mib": int(extra_bytes) / 2**20,
        "image_mib": image_bytes / 2**20,
        "extra_peak_in_image_copies": int(extra_bytes) / image_bytes,
        "seconds": float(seconds),
    }


# ----------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few samples, short timings (smoke test)")
    parser.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    args = parser.parse_args()
    fidelity_samples = {128: 48, 512: 12} if args.quick else {128: 400, 512: 60}
    seconds = 0.5 if args.quick else 3.0

    import torch

    torch.set_num_threads(1)
    load_before = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results: dict = {"exactness": exactness(4 if args.quick else 25)}
    print("## Exactness: same noise and parameters (128², per preset; engine stamping | FFT)\n")
    print("| preset | samples | max abs diff of R | share of pixels off by > 1 |\n|---|---|---|---|")
    for row in results["exactness"]:
        print(
            f"| {row['preset']} | {row['samples']} | {row['max_abs_diff_sparse']} \\| {row['max_abs_diff_fft']} "
            f"| {row['share_off_by_more_than_1_sparse']:.2e} \\| {row['share_off_by_more_than_1_fft']:.2e} |"
        )

    results["fidelity"] = [row for size in (128, 512) for row in fidelity(size, fidelity_samples[size])]
    print("\n## Fidelity per preset: engine | reference (z = difference / its standard error)\n")
    print("| size | preset | n | coverage R>50 | z | mean R | z | angle sd (deg) | angle KS p |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results["fidelity"]:
        print(
            f"| {row['size']}² | {row['preset']} | {row['samples']} "
            f"| {row['cov_engine']:.3f} \\| {row['cov_reference']:.3f} | {row['cov_z']:+.1f} "
            f"| {row['mean_engine']:.1f} \\| {row['mean_reference']:.1f} | {row['mean_z']:+.1f} "
            f"| {row['angle_sd_engine']:.1f} \\| {row['angle_sd_reference']:.1f} | {row['angle_ks_p']:.2f} |"
        )

    results["kernel_build"] = kernel_build_cost()
    # 64² is the training crop of the default params (curate.patch_size); 128² and 512² are the goal's.
    results["speed"] = [speed(size, threads, seconds) for threads in (1, 2) for size in (64, 128, 512)]
    print("\n## Speed: rain layers per second (preset medium; ratio = engine batched / reference)\n")
    names = [key for key in results["speed"][0] if key not in ("size", "threads")]
    print("| size | threads | " + " | ".join(names) + " | ratio | ratio torch ops |")
    print("|---|---|" + "---|" * len(names) + "---|---|")
    for row in results["speed"]:
        ratio = row["engine_batched"] / row["reference_opencv"]
        before = row["engine_torch_ops"] / row["reference_opencv"]
        rates = " | ".join(f"{row[n]:.0f}" for n in names)
        print(f"| {row['size']}² | {row['threads']} | {rates} | {ratio:.2f}x | {before:.2f}x |")
    results["breakdown"] = [breakdown(size, 5 if args.quick else 30) for size in (128, 512)]
    print("\n## Where the engine's time goes (ms per layer, 1 thread, median)\n")
    stages = [key for key in results["breakdown"][0] if key not in ("size", "pairs_per_layer")]
    print("| stage | " + " | ".join(f"{row['size']}²" for row in results["breakdown"]) + " |")
    print("|---|" + "---|" * len(results["breakdown"]))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{row[stage]:.3f}" for row in results["breakdown"]) + " |")
    pairs = " | ".join(f"{row['pairs_per_layer']:.0f}" for row in results["breakdown"])
    print(f"| (stamp, kernel entry) pairs per layer | {pairs} |")
    build = results["kernel_build"]
    print(
        f"\nStamp kernels of preset {build['preset']} (built once, then cached; left out of the table): "
        f"{build['kernels']} kernels, {build['seconds']:.1f} s, {build['ms_per_kernel']:.2f} ms each"
    )

    results["memory_4096"] = memory_4096()
    m = results["memory_4096"]
    print(
        f"\n## Memory: 4096² image ({m['image_mib']:.0f} MiB as uint8 RGB): synthesize_rain peak +"
        f"{m['extra_peak_mib']:.0f} MiB = {m['extra_peak_in_image_copies']:.1f} image copies "
        f"(including the rainy output and R), {m['seconds']:.1f} s"
    )
    load_after = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results["load_average"] = {"start": load_before, "end": load_after}
    print(
        f"\nMachine: {os.cpu_count()} CPUs, load average (1, 5, 15 min) {load_before} at the start, "
        f"{load_after} at the end; torch {torch.__version__}"
    )
    results["peak_rss_mib_benchmark_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
