"""Split by photo (no leakage, deterministic) and selection (exact N, policy respected, deterministic)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ParamsError
from pipeline.curation.selection import complexity_bins, select_patches
from pipeline.curation.split import assign_splits

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def photos(n: int) -> list[list[str]]:
    return [[f"photo-{i:03d}"] for i in range(n)]


def test_split_hits_the_fractions_and_covers_every_photo_once():
    assignment = assign_splits(photos(20), FRACTIONS, seed=1)
    assert sorted(assignment) == [g[0] for g in photos(20)]
    counts = {s: list(assignment.values()).count(s) for s in FRACTIONS}
    assert counts == {"train": 14, "val": 3, "test": 3}


def test_split_is_deterministic_seeded_and_order_free():
    first = assign_splits(photos(30), FRACTIONS, seed=7)
    assert assign_splits(list(reversed(photos(30))), FRACTIONS, seed=7) == first
    assert assign_splits(photos(30), FRACTIONS, seed=8) != first


def test_near_duplicate_groups_never_straddle_splits():
    groups = [["a", "a-copy", "a-small"], ["b", "b-jpeg"], *photos(10)]
    for seed in range(20):
        assignment = assign_splits(groups, FRACTIONS, seed)
        for group in groups:
            assert len({assignment[member] for member in group}) == 1, (seed, group)


def test_every_split_gets_a_photo_when_possible():
    tiny = assign_splits(photos(3), {"train": 0.9, "val": 0.05, "test": 0.05}, seed=0)
    assert sorted(tiny.values()) == ["test", "train", "val"]
    assert sorted(assign_splits(photos(2), FRACTIONS, seed=0).values()) == ["train", "val"]
    with pytest.raises(ValueError, match="appear in more than one group"):
        assign_splits([["a", "b"], ["b"]], FRACTIONS, seed=0)


def test_complexity_bins_are_equal_count_and_collapse_on_uniform_data():
    bins, edges = complexity_bins(np.arange(30.0)[::-1], 3)
    assert np.bincount(bins).tolist() == [10, 10, 10] and len(edges) == 2
    assert bins[0] == 2 and bins[-1] == 0  # 29 is textured, 0 is smooth
    uniform, _ = complexity_bins(np.full(50, 4.2), 3)
    assert set(uniform.tolist()) == {0}


CANDIDATE_BINS = np.repeat([0, 1, 2], [40, 25, 35])  # 100 training patches over 3 bins


@pytest.mark.parametrize("policy", ["all", "smooth", "textured", "balanced"])
def test_selection_is_exact_and_deterministic(policy: str):
    chosen = select_patches(CANDIDATE_BINS, 20, policy, 3, np.random.default_rng(5))
    assert len(chosen) == 20 and len(set(chosen.tolist())) == 20
    assert np.all(np.diff(chosen) > 0)  # sorted, so patches keep manifest order
    again = select_patches(CANDIDATE_BINS, 20, policy, 3, np.random.default_rng(5))
    assert np.array_equal(chosen, again)
    other = select_patches(CANDIDATE_BINS, 20, policy, 3, np.random.default_rng(6))
    assert not np.array_equal(chosen, other)


def test_policies_are_respected():
    rng = np.random.default_rng(0)
    assert set(CANDIDATE_BINS[select_patches(CANDIDATE_BINS, 30, "smooth", 3, rng)]) == {0}
    assert set(CANDIDATE_BINS[select_patches(CANDIDATE_BINS, 30, "textured", 3, rng)]) == {2}
    balanced = np.bincount(CANDIDATE_BINS[select_patches(CANDIDATE_BINS, 50, "balanced", 3, rng)], minlength=3)
    assert balanced.sum() == 50 and balanced.max() - balanced.min() <= 1
    # N = 0: everything the policy can supply.
    assert len(select_patches(CANDIDATE_BINS, 0, "all", 3, rng)) == 100
    assert len(select_patches(CANDIDATE_BINS, 0, "textured", 3, rng)) == 35
    assert np.bincount(CANDIDATE_BINS[select_patches(CANDIDATE_BINS, 0, "balanced", 3, rng)]).tolist() == [25, 25, 25]
    # The largest balanced N: 25 per bin plus one more from each of the 2 bins with more to spare.
    assert len(select_patches(CANDIDATE_BINS, 77, "balanced", 3, rng)) == 77


@pytest.mark.parametrize(
    ("policy", "n", "supply"),
    [
        ("all", 101, "100 training patches"),
        ("smooth", 41, "40 training patches in the lowest"),
        ("balanced", 78, "at most 77"),
    ],
)
def test_asking_for_too_many_names_the_key(policy: str, n: int, supply: str):
    with pytest.raises(ParamsError, match=r"curate\.selection\.n_backgrounds") as error:
        select_patches(CANDIDATE_BINS, n, policy, 3, np.random.default_rng(0))
    assert supply in str(error.value)
