"""Training data: patch arrays, random crops with augmentation, on-the-fly rain, prefetching, suites.

Every batch is drawn from generators seeded by (params seed, stream name, step): batch k is the
same whether the run was interrupted before it or not, so a resumed run needs no saved data RNG
state, and a background thread can prepare batches ahead of the training step.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.io import load_npy, load_png


def load_patches(path: Path | str, multiple: int = 1) -> np.ndarray:
    """Patches uint8 (N, P, P, 3) in [0, 255] (memory-mapped); checks dtype, shape and P % multiple."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such patch file (run the curate step first)")
    patches = load_npy(path)
    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[-1] != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"{path}: expected uint8 patches of shape (N, P, P, 3), got {patches.dtype} {patches.shape}")
    if len(patches) == 0:
        raise ValueError(f"{path}: holds no patches")
    if patches.shape[1] % multiple:
        raise ValueError(f"{path}: patch size {patches.shape[1]} is not divisible by the model's stride {multiple}")
    return patches


def random_crops(patches: np.ndarray, batch_size: int, crop: int, augment: bool, rng: np.random.Generator) -> np.ndarray:
    """`batch_size` random crops of `crop`² (uint8 (B, crop, crop, 3)), each randomly flipped/rotated.

    The 8 flips/rotations are applied to the clean crop only: rain added afterwards keeps its
    configured angles.
    """
    size = patches.shape[1]
    if crop > size:
        raise ValueError(f"train.crop_size={crop} is larger than the training patches ({size}px, curate.patch_size)")
    index = np.sort(rng.integers(0, len(patches), batch_size))  # sorted: sequential reads of the memmap
    ys, xs = rng.integers(0, size - crop + 1, (2, batch_size))
    turns, flips = rng.integers(0, 4, batch_size), rng.integers(0, 2, batch_size)
    out = np.empty((batch_size, crop, crop, 3), dtype=np.uint8)
    for i in range(batch_size):
        tile = patches[index[i], ys[i] : ys[i] + crop, xs[i] : xs[i] + crop]
        if augment:
            tile = np.rot90(tile, turns[i])
            if flips[i]:
                tile = tile[:, ::-1]
        out[i] = tile
    return out


def to_tensor(images: np.ndarray):
    """uint8 (N, H, W, 3) in [0, 255] -> float32 NCHW in [0, 1], channels_last memory."""
    import torch

    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # memory-mapped patches: torch wants a writable buffer
        images = images.copy()
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


class Prefetcher:
    """Runs `make_batch(step)` for steps start..end-1 in a background thread, `depth` batches ahead.

    Torch and numpy release the GIL in their kernels, so batch preparation overlaps the training
    step. `produce_seconds` sums the producer's time; `wait_seconds` the consumer's blocking time.
    """

    def __init__(self, make_batch: Callable[[int], object], start: int, end: int, depth: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.produce_seconds = 0.0
        self.wait_seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(make_batch, start, end), daemon=True)
        self._thread.start()

    def _run(self, make_batch, start, end):
        for step in range(start, end):
            began = time.perf_counter()
            try:
                item = (step, make_batch(step), None)
            except BaseException as error:  # handed to the consumer, which re-raises it
                item = (step, None, error)
            self.produce_seconds += time.perf_counter() - began
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or item[2] is not None:
                return

    def get(self, step: int):
        """The batch for `step` (steps must be requested in order)."""
        began = time.perf_counter()
        produced_step, batch, error = self._queue.get()
        self.wait_seconds += time.perf_counter() - began
        if error is not None:
            raise error
        if produced_step != step:
            raise RuntimeError(f"prefetcher out of order: asked for step {step}, got {produced_step}")
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Suite:
    """A validation suite: image ids; per image uint8 HxWx3 clean and rainy in [0, 255], rain layer HxW."""

    name: str
    names: list[str]
    clean: list[np.ndarray]
    rainy: list[np.ndarray]
    rain: list[np.ndarray]


def load_suite(folder: Path | str) -> Suite:
    """Read `{suites}/<suite>/{clean,rainy,rain}/<id>.png` (layout in docs/dataflow.md)."""
    folder = Path(folder)
    for sub in ("clean", "rainy", "rain"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"{folder / sub}: missing validation suite folder (run the synthesize step first)")
    names = sorted(p.stem for p in (folder / "rainy").glob("*.png"))
    if not names:
        raise FileNotFoundError(f"{folder / 'rainy'}: no PNG images in the validation suite")
    clean = [load_png(folder / "clean" / f"{n}.png") for n in names]
    rainy = [load_png(folder / "rainy" / f"{n}.png") for n in names]
    rain = [load_png(folder / "rain" / f"{n}.png", grey=True) for n in names]
    for n, c, r, m in zip(names, clean, rainy, rain):
        if c.shape != r.shape or c.shape[:2] != m.shape:
            raise ValueError(f"{folder}: {n}.png differs in size between clean/, rainy/ and rain/")
    return Suite(folder.name, names, clean, rainy, rain)
