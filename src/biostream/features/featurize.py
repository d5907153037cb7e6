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
from biostream.features.windows import WindowGeometry, iter_cohort_windows


@dataclass(frozen=True)
class FeaturizeParams:
    """`params.yaml: featurize`."""

    geometry: WindowGeometry
    train_stride_s: int
    eval_stride_s: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FeaturizeParams:
        w = "params.yaml: featurize"
        sec = require(params, "featurize", "params.yaml")
        try:
            geometry = WindowGeometry(*(int(require(sec, k, w)) for k in (
                "window_s", "recent_s", "block_s", "sequence_s", "sequence_step_s")))
        except ConfigError as exc:
            raise ConfigError(f"{w}: {exc}") from exc
        out = cls(geometry, int(require(sec, "train_stride_s", w)), int(require(sec, "eval_stride_s", w)))
        if min(out.train_stride_s, out.eval_stride_s) < 1:
            raise ConfigError(f"{w}: strides must be >= 1 second")
        return out

    def stride_by_split(self) -> dict[str, int]:
        return {"train": self.train_stride_s, "val": self.eval_stride_s, "test": self.eval_stride_s}


META_COLUMNS = ("patient_id", "time_s", "split", "label", "artefact", "anomaly_kind", "event_id", "alarm", "ew_any")


def featurize(
    vitals: pd.DataFrame,
    signals: Sequence[str],
    params: FeaturizeParams,
    progress: Callable[[Iterator[Any]], Iterator[Any]] = lambda it: it,
) -> pd.DataFrame:
    """The feature table of a dataset: the meta columns of each scored second and its raw features."""
    names = feature_names(signals)
    rows, feats = [], []
    windows = iter_cohort_windows(vitals, signals, params.geometry.window_s, params.stride_by_split())
    for idx, win in progress(windows):
        rows.append(idx)
        feats.append(window_features(win, signals, params.geometry).astype(np.float32))
    index = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
    matrix = np.concatenate(feats) if feats else np.empty((0, len(names)), dtype=np.float32)
    meta = vitals.iloc[index][list(META_COLUMNS)].reset_index(drop=True)
    return pd.concat([meta, pd.DataFrame(matrix, columns=names)], axis=1)

