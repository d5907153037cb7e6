"""Imputation and scaling of features, fitted on training patients only (JSON-serialisable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.features.compute import CROSS, PER_SIGNAL, feature_names
from biostream.features.readiness import learned_defined
from biostream.features.windows import WindowGeometry

TAIL_QUANTILE = 0.9999  # of |z| over normal training rows ...
TAIL_Z = 2.0  # ... is scaled to this; values are clipped at 3x it
SEQUENCE_CLIP = 5.0  # raw values for sequence models, in IQRs of the signal
MIN_TAIL = 0.5  # a tail under half an IQR counts as half: a near-constant feature's scale shrinks at most 4x


@dataclass
class Preprocessor:
    """Median imputation and robust scaling of features, and per-signal scaling of raw values for sequence
    models. Fit on training rows only; JSON-serialisable.

    A feature's scale is its IQR, widened or narrowed so that the 99.99th percentile of |z| over normal
    training rows lands at `TAIL_Z` (never more than `TAIL_Z / MIN_TAIL` times narrower than the IQR): then a
    normal row lies within about +-2 in every feature, and values are clipped at `clip` = 3x that. A fixed
    clip in IQR units destroyed what matters: heavy-tailed features (seconds frozen, step ratios, jumps) reach
    +-5 IQR in normal rows, so a frozen heart rate at 14 IQR was clipped to the same 5 as normal noise
    (docs/results.md)."""

    feature_median: np.ndarray
    feature_scale: np.ndarray
    signal_median: np.ndarray
    signal_scale: np.ndarray
    clip: float = 5.0
    centre_sequences: bool = False  # each sequence about its own mean (the patient's changes, not levels)

    @classmethod
    def fit(
        cls, features: np.ndarray, raw_values: np.ndarray, min_scale: np.ndarray | None = None,
        normal: np.ndarray | None = None, clip: float = 3.0 * TAIL_Z,
    ) -> Preprocessor:
        """`features`: (N, F) training features; `raw_values`: (M, S) training per-second signals;
        `min_scale`: (F,) the smallest scale per feature (`feature_min_scale`); `normal`: (N,) True for the
        rows without anomaly or artefact, whose tail sets the scale (default: all rows)."""
        features = np.asarray(features, dtype=np.float64)
        fm, fs = _robust_location_scale(features)
        if min_scale is not None:
            fs = np.maximum(fs, min_scale)
        rows = features if normal is None else features[np.asarray(normal, dtype=bool)]
        if len(rows):
            with np.errstate(invalid="ignore"), _quiet_all_nan():
                tail = np.nanquantile(np.abs(rows - fm) / fs, TAIL_QUANTILE, axis=0)
            fs = fs * np.maximum(np.where(np.isfinite(tail), tail, TAIL_Z), MIN_TAIL) / TAIL_Z
        sm, ss = _robust_location_scale(raw_values)
        return cls(fm, fs, sm, ss, clip, centre_sequences=True)

    def transform(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.feature_median) / self.feature_scale
        z = np.where(np.isnan(z), 0.0, z)  # imputed at the training median
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def transform_sequence(self, seq: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, T, S) step means and their mask -> scaled values (0 where missing) and the mask. Centred: each
        window's signal about its own mean over the steps observed (a level far from the training population is
        not an anomaly: the bedside rules read levels); otherwise about the training median."""
        if self.centre_sequences:
            observed = mask > 0
            with np.errstate(invalid="ignore"):
                own = np.nansum(np.where(observed, seq, 0.0), axis=1, keepdims=True) / np.maximum(
                    observed.sum(axis=1, keepdims=True), 1)
            z = (seq - own) / self.signal_scale
        else:
            z = (seq - self.signal_median) / self.signal_scale
        z = np.where(mask > 0, z, 0.0)
        return np.clip(z, -SEQUENCE_CLIP, SEQUENCE_CLIP).astype(np.float32), mask.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature_median": self.feature_median.tolist(),
            "feature_scale": self.feature_scale.tolist(),
            "signal_median": self.signal_median.tolist(),
            "signal_scale": self.signal_scale.tolist(),
            "clip": self.clip,
            "centre_sequences": self.centre_sequences,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(
            np.asarray(d["feature_median"]),
            np.asarray(d["feature_scale"]),
            np.asarray(d["signal_median"]),
            np.asarray(d["signal_scale"]),
            float(d["clip"]),
            bool(d.get("centre_sequences", False)),  # bundles made before: about the training median
        )


def feature_min_scale(signals: Sequence[str], geometry: WindowGeometry) -> np.ndarray:
    """The smallest scale each feature gets. Missing fractions and seconds-since-change are almost always 0
    on continuous signals, so a robust scale fitted on them is ~0 and one missing second would look like
    an extreme outlier: they are scaled in their natural units instead (fraction of the window; a quarter
    of the recent part in seconds)."""
    floor = {"missing": 1.0, "ctx_missing": 1.0, "age": geometry.recent_s / 4.0}
    per_signal = [floor.get(f, 0.0) for f in PER_SIGNAL]
    return np.array(per_signal * len(signals) + [0.0] * len(CROSS))


def _robust_location_scale(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column NaN-aware median and IQR (falling back to std, then 1) of a 2-D array."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(invalid="ignore"), _quiet_all_nan():
        med = np.nanmedian(x, axis=0)
        q1, q3 = np.nanpercentile(x, [25, 75], axis=0)
        iqr = q3 - q1
        std = np.nanstd(x, axis=0)
    scale = np.where(np.isfinite(iqr) & (iqr > 1e-9), iqr, np.where(np.isfinite(std) & (std > 1e-9), std, 1.0))
    return np.where(np.isfinite(med), med, 0.0), scale


class _quiet_all_nan:
    """Silence numpy's 'All-NaN slice' warnings: an all-missing column is expected (absent signals)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)



def fit_on_training(table: pd.DataFrame, vitals: pd.DataFrame, signals: Sequence[str],
                    geometry: WindowGeometry) -> Preprocessor:
    """The preprocessor of a feature table (as `featurize` writes it), fitted on its training patients only: the
    features of their scored seconds with a learned score (the tail scale from those without anomaly or artefact)
    and their raw per-second signals."""
    train = (table["split"] == "train") & learned_defined(table)  # rows a learned model scores
    if not train.any():
        raise ValueError("no training patients to fit the preprocessor on: add patients to the training sources")
    normal = (table.loc[train, "label"] == 0) & (table.loc[train, "artefact"] == 0)
    raw = vitals.loc[vitals["split"] == "train", list(signals)].to_numpy(np.float64)
    return Preprocessor.fit(table.loc[train, feature_names(signals)].to_numpy(np.float64), raw,
                            min_scale=feature_min_scale(signals, geometry), normal=normal.to_numpy())
