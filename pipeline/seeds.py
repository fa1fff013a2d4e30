"""Seeded random streams. Every random draw in raincheck comes from params.yaml's `seed`.

A stream is named (e.g. "split", "synthesize/unseen", "train") so that adding a draw in one step
never shifts the numbers another step sees.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stream_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from the base seed and a stream name (stable across runs/platforms)."""
    key = "/".join([str(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *names: object) -> np.random.Generator:
    return np.random.default_rng(stream_seed(seed, *names))


def torch_generator(seed: int, *names: object, device: str = "cpu"):
    """A torch.Generator seeded from the named stream."""
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(stream_seed(seed, *names))
    return generator
