"""The feature table of a dataset (the `featurize` stage's work): every scored second's meta columns and raw
features, from windows of whole recordings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.params import FeaturizeParams  # noqa: F401 (params.yaml: its section)
from biostream.features.compute import feature_names, window_features
from biostream.features.readiness import READ_COLUMN, Readiness, read_bits
from biostream.features.windows import iter_cohort_windows

META_COLUMNS = ("patient_id", "time_s", "split", "label", "artefact", "anomaly_kind", "event_id", "alarm", "ew_any")


def featurize(
    vitals: pd.DataFrame,
    signals: Sequence[str],
    params: FeaturizeParams,
    progress: Callable[[Iterator[Any]], Iterator[Any]] = lambda it: it,
    learned_from: bool = True,
) -> pd.DataFrame:
    """The feature table of a dataset: the meta columns of each scored second, the signals a learned model reads
    there (`READ_COLUMN`), and the raw features of what it reads (`biostream.features.readiness`). `learned_from`:
    whether models learn from the dataset (its training patients are scored every `train_stride_s` seconds)."""
    names = feature_names(signals)
    rows, feats, reads = [], [], []
    geometry, readiness = params.geometry, Readiness.of(params)
    windows = iter_cohort_windows(vitals, signals, geometry.window_s, params.stride_by_split(learned_from))
    for idx, win in progress(windows):
        rows.append(idx)
        read = readiness.read(win)
        reads.append(read_bits(read))
        feats.append(window_features(win, signals, geometry, read).astype(np.float32))
    index = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    matrix = np.concatenate(feats) if feats else np.empty((0, len(names)), dtype=np.float32)
    meta = vitals.iloc[index][list(META_COLUMNS)].reset_index(drop=True)
    meta[READ_COLUMN] = (np.concatenate(reads) if reads else np.empty(0)).astype(np.int16)
    return pd.concat([meta, pd.DataFrame(matrix, columns=names)], axis=1)

