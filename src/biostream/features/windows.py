"""The windows every model scores: the history behind a scored second, cut from whole recordings.

`WindowGeometry` says what a model sees (`window_s` seconds in all, the last `recent_s` in detail, blocks of
`block_s`, the last `sequence_s` as the LSTM's sequence). `recording_windows` / `iter_cohort_windows` /
`windows_at` cut windows from recordings: never spanning two patients, never using data after the scored second
(seconds before a recording are missing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from biostream.core.params import WindowGeometry  # noqa: F401 (params.yaml: featurize)


def recording_windows(
    values: np.ndarray, length_s: int, ends: np.ndarray
) -> np.ndarray:
    """Windows of one recording. `values`: (T, S) per-second signals; `ends`: the scored seconds (row
    indices). Returns a (len(ends), S, length_s) view-backed copy; seconds before the recording are NaN."""
    t, s = values.shape
    padded = np.concatenate([np.full((length_s - 1, s), np.nan, dtype=values.dtype), values], axis=0)
    view = sliding_window_view(padded, length_s, axis=0)  # (T, S, W): view[i] ends at row i
    return view[ends]


def iter_cohort_windows(
    vitals: pd.DataFrame,
    signals: Sequence[str],
    length_s: int,
    stride_by_split: Mapping[str, int],
    chunk: int = 256,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (row indices into `vitals`, (n, S, W) windows) for every stride-th second of every patient
    (the stride depends on the patient's split), in table order, at most `chunk` windows at a time.
    `vitals` is sorted by patient and time (as the dataset stages write it)."""
    if vitals.empty:
        return
    pid = vitals["patient_id"].to_numpy()
    split = vitals["split"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1], True])
    values = vitals[list(signals)].to_numpy(dtype=np.float32)  # as stored, and as window_features reads them
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        ends = np.arange(0, b - a, stride_by_split[split[a]])
        for c in range(0, len(ends), chunk):
            part = ends[c : c + chunk]
            yield a + part, recording_windows(values[a:b], length_s, part)


def windows_at(
    vitals: pd.DataFrame, signals: Sequence[str], length_s: int, patient_ids: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """The (n, S, W) windows ending at the given (patient, second) pairs, in the order given."""
    patient_ids, times = np.asarray(patient_ids), np.asarray(times)
    out = np.empty((len(times), len(signals), length_s), dtype=np.float64)
    if not len(times):
        return out
    pid = vitals["patient_id"].to_numpy()
    bounds = np.flatnonzero(np.r_[True, pid[1:] != pid[:-1], True])
    starts = {pid[a]: (a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)}
    values = vitals[list(signals)].to_numpy(dtype=np.float64)
    time_s = vitals["time_s"].to_numpy()
    for p in np.unique(patient_ids):
        if p not in starts:
            raise KeyError(f"patient '{p}' is not in the vitals table")
        a, b = starts[p]
        sel = np.flatnonzero(patient_ids == p)
        rows = np.searchsorted(time_s[a:b], times[sel])
        if (rows >= b - a).any() or (time_s[a:b][np.minimum(rows, b - a - 1)] != times[sel]).any():
            raise KeyError(f"patient '{p}': some requested seconds are not in the vitals table")
        out[sel] = recording_windows(values[a:b], length_s, rows)
    return out
