"""Train/val/test split by source photo, never by patch, so no photo's content reaches two splits.

The unit of assignment is a group of photos (a photo and its near-duplicates): every member of a
group gets the same split, so near-duplicates can never straddle splits whatever grouping the
caller passes. (curate keeps one photo per near-duplicate group, so there its groups are single
photos.)
"""

from __future__ import annotations

from typing import Mapping, Sequence

from pipeline.seeds import stream_seed

SPLITS = ("train", "val", "test")


def assign_splits(groups: Sequence[Sequence[str]], fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """Map every image id in `groups` to "train", "val" or "test".

    - Deterministic from `seed`: groups are ordered by a hash of (seed, group's smallest id), so
      the order does not depend on the order of `groups`, and adding a photo does not reshuffle
      the others.
    - Every split gets at least one group when there are ≥ 3 groups (train first, then val,
      then test when there are fewer).
    - The rest go, one group at a time, to the split furthest below its target photo count
      (fraction × number of photos; ties in train, val, test order).
    """
    missing = [name for name in SPLITS if name not in fractions]
    if missing:
        raise ValueError(f"split fractions need keys {list(SPLITS)}, missing {missing}")
    units = sorted(
        (sorted(group) for group in groups if len(group)),
        key=lambda unit: (stream_seed(seed, "curate", "split", unit[0]), unit[0]),
    )
    seen: set[str] = set()
    for unit in units:
        if seen.intersection(unit):
            raise ValueError(f"photo(s) {sorted(seen.intersection(unit))} appear in more than one group")
        seen.update(unit)

    total = sum(len(unit) for unit in units)
    targets = {name: fractions[name] * total for name in SPLITS}
    counts = dict.fromkeys(SPLITS, 0)
    assignment: dict[str, str] = {}
    for position, unit in enumerate(units):
        if position < len(SPLITS):
            name = SPLITS[position]
        else:
            name = max(SPLITS, key=lambda s: (targets[s] - counts[s], -SPLITS.index(s)))
        counts[name] += len(unit)
        assignment.update(dict.fromkeys(unit, name))
    return assignment
