"""The feature table of a dataset (the `featurize` stage's work): every scored second's meta columns and raw
features, from windows of whole recordings."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import ConfigError, require
from biostream.features.compute import feature_names, window_features
from biostream.features.readiness import READ_COLUMN, Readiness, read_bits
from biostream.features.windows import WindowGeometry, iter_cohort_windows


@dataclass(frozen=True)
class FeaturizeParams:
    """`params.yaml: featurize`."""

    geometry: WindowGeometry
    train_stride_s: int
    eval_stride_s: int
    readiness: Readiness = Readiness()

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FeaturizeParams:
        w = "params.yaml: featurize"
        sec = require(params, "featurize", "params.yaml")
        try:
            geometry = WindowGeometry(*(int(require(sec, k, w)) for k in (
                "window_s", "recent_s", "block_s", "sequence_s", "sequence_step_s")))
        except ConfigError as exc:
            raise ConfigError(f"{w}: {exc}") from exc
        out = cls(geometry, int(require(sec, "train_stride_s", w)), int(require(sec, "eval_stride_s", w)),
                  Readiness.from_params(params))
        if min(out.train_stride_s, out.eval_stride_s) < 1:
            raise ConfigError(f"{w}: strides must be >= 1 second")
        if out.readiness.min_history_s > geometry.window_s:
            raise ConfigError(f"{w}.min_history_s ({out.readiness.min_history_s}) must be at most window_s "
                              f"({geometry.window_s})")
        return out

    def stride_by_split(self, learned_from: bool = True) -> dict[str, int]:
        """Seconds between scored rows per split: a source the models learn from scores every `train_stride_s`-th
        second of its training patients; every other second, and every second of a source only evaluated on."""
        train = self.train_stride_s if learned_from else self.eval_stride_s
        return {"train": train, "val": self.eval_stride_s, "test": self.eval_stride_s}


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
    windows = iter_cohort_windows(vitals, signals, params.geometry.window_s, params.stride_by_split(learned_from))
    for idx, win in progress(windows):
        rows.append(idx)
        read = params.readiness.read(win)
        reads.append(read_bits(read))
        feats.append(window_features(win, signals, params.geometry, read).astype(np.float32))
    index = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    matrix = np.concatenate(feats) if feats else np.empty((0, len(names)), dtype=np.float32)
    meta = vitals.iloc[index][list(META_COLUMNS)].reset_index(drop=True)
    meta[READ_COLUMN] = (np.concatenate(reads) if reads else np.empty(0)).astype(np.int16)
    return pd.concat([meta, pd.DataFrame(matrix, columns=names)], axis=1)

