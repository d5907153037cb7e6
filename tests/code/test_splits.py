from __future__ import annotations

from biostream.core.config import SplitParams
from biostream.data.splits import assign_splits

P = SplitParams(seed=3, train=0.6, val=0.2, test=0.2)


def test_exact_counts_and_deterministic():
    ids = [f"p{i}" for i in range(50)]
    a = assign_splits(ids, P)
    assert a == assign_splits(list(reversed(ids)), P), "order of input must not matter"
    counts = {s: sum(v == s for v in a.values()) for s in ("train", "val", "test")}
    assert counts == {"train": 30, "val": 10, "test": 10}


def test_seed_changes_assignment():
    ids = [f"p{i}" for i in range(50)]
    assert assign_splits(ids, P) != assign_splits(ids, SplitParams(4, 0.6, 0.2, 0.2))


def test_small_cohorts_get_every_split():
    a = assign_splits(["x", "y", "z"], P)
    assert sorted(a.values()) == ["test", "train", "val"]
    assert assign_splits([], P) == {}


def test_adding_a_patient_moves_few_others():
    ids = [f"p{i}" for i in range(100)]
    before = assign_splits(ids, P)
    after = assign_splits([*ids, "new"], P)
    moved = sum(before[i] != after[i] for i in ids)
    assert moved <= 2
