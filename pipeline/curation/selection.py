"""Choose the training backgrounds: exactly N patches under a complexity policy.

Complexity bins are equal-count bins (quantiles) of the chosen measure over every kept patch of
the pool, all splits together, so "smooth" and "textured" mean the same thing whichever split a
patch landed in. Bin b holds values in (edge[b-1], edge[b]]; bin 0 also holds the minimum. When
many patches share a value (e.g. flat sky) the edges coincide and bins hold unequal counts; a
pool of one value falls entirely in bin 0, which the data checks report as "too uniform".

Policies, over the training-split patches (the candidates):
- all:      N candidates drawn uniformly at random (N = 0: every candidate).
- smooth:   N drawn from the lowest complexity bin (N = 0: the whole bin).
- textured: N drawn from the highest complexity bin (N = 0: the whole bin).
- balanced: N split as evenly as possible across all bins, each bin's share drawn at random
            (N = 0: bins × the smallest bin's count); the N % bins extra patches come
            from the bins with most patches to spare.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import SELECTION_POLICIES, ParamsError

N_KEY = "curate.selection.n_backgrounds"


def complexity_bins(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Equal-count bin of each value: (int64 bin index in [0, bins), float64 inner edges (bins-1,))."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(bins - 1)
    edges = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    return np.searchsorted(edges, values, side="left").astype(np.int64), edges


def select_patches(candidate_bins: np.ndarray, n: int, policy: str, bins: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into the candidates (sorted, int64) of the selected training patches.

    candidate_bins: int (M,) complexity bin of each training-split patch, in [0, bins).
    n: how many to select, exactly; 0 means all that the policy can supply.
    Raises ParamsError naming curate.selection.n_backgrounds when the policy cannot supply n.
    """
    if policy not in SELECTION_POLICIES:
        raise ParamsError(f"curate.selection.policy: {policy!r} is not one of {list(SELECTION_POLICIES)}")
    candidate_bins = np.asarray(candidate_bins, dtype=np.int64)
    members = [np.flatnonzero(candidate_bins == b) for b in range(bins)]
    if policy == "balanced":
        chosen = _balanced(members, n, rng)
    else:
        pool = {"all": np.arange(len(candidate_bins)), "smooth": members[0], "textured": members[-1]}[policy]
        if n > len(pool):
            end = "lowest" if policy == "smooth" else "highest"
            where = "" if policy == "all" else f" in the {end} of {bins} complexity bins"
            raise ParamsError(
                f"{N_KEY}={n} exceeds what policy {policy!r} can supply: {len(pool)} training patches{where}"
            )
        chosen = pool if n == 0 else rng.choice(pool, size=n, replace=False)
    return np.sort(np.asarray(chosen, dtype=np.int64))


def _balanced(members: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n // bins from every bin; the n % bins extra patches come from the bins with most to spare."""
    bins = len(members)
    sizes = np.array([len(m) for m in members])
    smallest = int(sizes.min())
    most = bins * smallest + int((sizes > smallest).sum())  # the largest n that can be balanced
    if n > most:
        b = int(sizes.argmin())
        raise ParamsError(
            f"{N_KEY}={n} exceeds what policy 'balanced' can supply: at most {most}, because "
            f"complexity bin {b} of {bins} has only {smallest} training patches (lower {N_KEY} or "
            f"curate.selection.bins)"
        )
    shares = np.full(bins, smallest if n == 0 else n // bins)
    if n:
        shares[np.argsort(-sizes, kind="stable")[: n % bins]] += 1
    picks = [rng.choice(m, size=int(share), replace=False) for m, share in zip(members, shares)]
    return np.concatenate(picks)
