"""Rain entries resolved to recipes, and the per-sample parameter draws of the recipe.

A rain entry is a preset name (pipeline.params.presets) or a RainConfig; draw_rain_params
draws one entry per sample, then each of its parameters, from an explicit torch generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from pipeline.params.rain import RainConfig
from pipeline.params.presets import PRESET_CONFIGS, PRESETS

if TYPE_CHECKING:
    import torch

RainSpec = Union[str, RainConfig]


# ----------------------------------------------------------------------------- rain entries
def resolve_rain(rain: Sequence[RainSpec]) -> list[RainConfig]:
    """Preset names and custom configs (RainConfig or a mapping) -> a list of RainConfig."""
    if isinstance(rain, (str, RainConfig)) or not isinstance(rain, Sequence) or len(rain) == 0:
        raise ValueError(
            f"rain must be a non-empty list of preset names {list(PRESETS)} or custom configs, got {rain!r}"
        )
    resolved = []
    for entry in rain:
        if isinstance(entry, str):
            if entry not in PRESET_CONFIGS:
                raise ValueError(f"unknown rain preset {entry!r}; allowed: {', '.join(PRESETS)} or a custom config")
            resolved.append(PRESET_CONFIGS[entry])
        elif isinstance(entry, RainConfig):
            resolved.append(entry)
        elif isinstance(entry, dict):
            resolved.append(RainConfig.model_validate(entry))
        else:
            raise ValueError(f"rain entry must be a preset name or a custom config, got {entry!r}")
    return resolved


@dataclass(frozen=True)
class RainDraw:
    """Per-sample parameters (tensors of shape (N,) on the compute device)."""

    entry: "torch.Tensor"  # long, index into the resolved entries
    amount: "torch.Tensor"  # float64 in [0, 1]
    width: "torch.Tensor"  # long, odd
    length: "torch.Tensor"  # long
    angle: "torch.Tensor"  # long, degrees
    beta: "torch.Tensor"  # float64
    haze: "torch.Tensor"  # float64 veiling strength, 0 where the entry has no haze extra
    airlight: "torch.Tensor"  # float64 grey level of the veil in [0, 1]

    def row(self, i: int, entries: Sequence[RainConfig]) -> dict:
        """Sample i as plain Python values (what a manifest records)."""
        params = {
            "preset": entries[int(self.entry[i])].name,
            "amount": float(self.amount[i]),
            "width": int(self.width[i]),
            "length": int(self.length[i]),
            "angle": int(self.angle[i]),
            "beta": float(self.beta[i]),
        }
        if entries[int(self.entry[i])].extras:
            params.update(haze=float(self.haze[i]), airlight=float(self.airlight[i]))
        return params


def _draw_widths(u: np.ndarray, entry: np.ndarray, entries: Sequence[RainConfig]) -> np.ndarray:
    size = max(len(e.width) for e in entries)
    values, edges = [], []
    for e in entries:
        probs = e.width_probs or [1.0 / len(e.width)] * len(e.width)
        values.append(e.width + [1] * (size - len(e.width)))
        inner = np.cumsum(probs)[:-1].tolist()  # cumulative probabilities; 2.0 is never reached
        edges.append(inner + [2.0] * (size - len(inner)))
    # The first choice whose cumulative probability exceeds u (the last one absorbs rounding).
    choice = (u[:, None] >= np.array(edges)[entry]).sum(1)
    return np.array(values, dtype=np.int64)[entry, choice]


def _draw_angles(u: np.ndarray, entry: np.ndarray, entries: Sequence[RainConfig]) -> np.ndarray:
    """Integer angles uniform over the union of each entry's (disjoint) ranges."""
    size = max(len(e.angle) for e in entries)
    padding = [[0] * (size - len(e.angle)) for e in entries]
    lows = np.array([[lo for lo, _ in e.angle] + pad for e, pad in zip(entries, padding)], dtype=np.float64)[entry]
    counts = np.array([[hi - lo + 1 for lo, hi in e.angle] + pad for e, pad in zip(entries, padding)], dtype=np.float64)[entry]
    ends = counts.cumsum(1)
    pick = np.minimum(np.floor(u * ends[:, -1]), ends[:, -1] - 1)  # index into the union
    which = (pick[:, None] >= ends).sum(1)
    rows = np.arange(len(u))
    return (lows[rows, which] + pick - (ends - counts)[rows, which]).astype(np.int64)


def draw_rain_params(
    entries: Sequence[RainConfig], n: int, generator: "torch.Generator", device: "torch.device | str"
) -> RainDraw:
    """Draw one entry and all its parameters for each of `n` samples (one rand call, 8 columns)."""
    import torch

    u = torch.rand((n, 8), generator=generator, device=generator.device, dtype=torch.float64).cpu().numpy()
    # The per-sample arithmetic is a few dozen operations on n numbers: numpy does each for a
    # fraction of a torch call's fixed cost (float64 either way, so the values are the same).
    entry = np.minimum(np.floor(u[:, 0] * len(entries)), len(entries) - 1).astype(np.int64)
    hazes = [e.extras[0] if e.extras else None for e in entries]
    # Per entry: (low, high) of amount, beta, haze strength, airlight and length, then "has haze".
    bounds = np.array(
        [
            [
                *e.amount, *e.beta, *(h.strength if h else (0.0, 0.0)), *(h.airlight if h else (1.0, 1.0)),
                *e.length, float(h is not None),
            ]
            for e, h in zip(entries, hazes)
        ],
        dtype=np.float64,
    )[entry]
    low, high = bounds[:, 0:10:2], bounds[:, 1:10:2]
    # Columns of u: 1 amount, 2 width, 3 length, 4 angle, 5 beta, 6 haze, 7 airlight.
    amount, beta, haze, airlight = (low[:, :4] + u[:, [1, 5, 6, 7]] * (high[:, :4] - low[:, :4])).T
    length = np.minimum(low[:, 4] + np.floor(u[:, 3] * (high[:, 4] - low[:, 4] + 1)), high[:, 4]).astype(np.int64)

    def tensor(values: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(values)).to(device)

    return RainDraw(
        entry=tensor(entry),
        amount=tensor(amount),
        width=tensor(_draw_widths(u[:, 2], entry, entries)),
        length=tensor(length),
        angle=tensor(_draw_angles(u[:, 4], entry, entries)),
        beta=tensor(beta),
        haze=tensor(bounds[:, 10] * haze),
        airlight=tensor(airlight),
    )
