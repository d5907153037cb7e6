"""Patient-level train/validation/test assignment: no patient is ever in two splits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from biostream.core.config import SplitParams
from biostream.data.schema import SPLITS


def assign_splits(patient_ids: Sequence[str], params: SplitParams) -> dict[str, str]:
    """Map each patient to 'train', 'val' or 'test'.

    Patients are ordered by a seeded hash of their id and cut at the configured fractions, so the
    assignment is deterministic, independent of input order, and exact in counts (rounded). A patient
    keeps its split when others are added unless a boundary moves past it.
    """
    ids = sorted(set(patient_ids))
    n = len(ids)
    if n == 0:
        return {}
    keys = [hashlib.sha256(f"{params.seed}:{pid}".encode()).hexdigest() for pid in ids]
    order = [ids[i] for i in np.argsort(keys, kind="stable")]
    n_test = int(round(params.test * n))
    n_val = int(round(params.val * n))
    if n >= 3:  # every split non-empty whenever its fraction is non-zero and there are enough patients
        n_test = max(n_test, 1 if params.test > 0 else 0)
        n_val = max(n_val, 1 if params.val > 0 else 0)
    n_train = max(n - n_val - n_test, 0)
    bounds = np.cumsum([n_train, n_val])
    out = {}
    for i, pid in enumerate(order):
        out[pid] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
    return out
