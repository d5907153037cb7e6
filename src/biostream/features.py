"""One feature pipeline for training, evaluation and serving.

Every model scores the window of history that ends at the scored second (`WindowGeometry`: `window_s`
seconds in all, the last `recent_s` described in detail, the whole summarised in blocks of `block_s`).
This module turns windows into what models read, with one code path whatever the number of windows:

* `window_features(windows, signals, geometry)`: (N, S, window_s) raw windows -> (N, F) features: per
  signal over the recent part the last value, mean, standard deviation, min, max, slope, change, median
  absolute deviation, fraction missing, permutation entropy, dominant frequency and high-frequency power
  share, peak count, and seconds since the value last changed (for cuff pressure: since the last fresh
  reading; for any signal: how long it has been frozen); per signal against the patient's own usual
  behaviour (the older half of the window) how long it has been frozen in units of its usual time between
  changes, the newest value against the recent median, and the recent step size against the usual one;
  per signal over the whole window how the recent mean compares with the patient's own earlier block
  means, their trend and spread, and the fraction missing; across signals: shock index (HR/SBP), pulse
  pressure, the HR-MAP correlation and MAP's departure from DBP + PP/3 (patient offset removed). Missing values
  (NaN) are handled explicitly: a feature that cannot be computed is NaN and `Preprocessor` imputes it;
  the fraction-missing features tell models it happened.
* `sequence_view(windows, geometry)`: the last `sequence_s` seconds as a sequence for the LSTM
  autoencoder, average-pooled to `sequence_step_s` steps, with a mask of observed steps.
* `recording_windows(...)` / `iter_cohort_windows(...)`: the windows of whole recordings, never spanning
  two patients, never using data after the scored second (seconds before a recording are missing).

`Preprocessor` (median imputation, robust scaling, fitted on training patients only) and the geometry
form the `InputPipeline`, a small JSON-serialisable object that travels with every model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from biostream.config import ConfigError, require
from biostream.feature_kernel import DOM_FREQ, HF_POWER, window_kernel

PER_SIGNAL = (
    "last",
    "mean",
    "std",
    "min",
    "max",
    "slope",
    "delta",
    "mad",
    "missing",
    "entropy",
    "dom_freq",
    "hf_power",
    "peaks",
    "age",
    "stale",
    "jump",
    "step_ratio",
    "ctx_shift",
    "ctx_trend",
    "ctx_std",
    "ctx_missing",
)
CROSS = ("shock_index", "pulse_pressure", "hr_map_corr", "map_residual")
CROSS_SIGNALS = {  # the signals each cross-signal feature is computed from
    "shock_index": ("hr", "sbp"),
    "pulse_pressure": ("sbp", "dbp"),
    "hr_map_corr": ("hr", "map"),
    "map_residual": ("map", "sbp", "dbp"),
}
# Groups of features a tabular detector can choose from (a hyperparameter: `feature_groups`).
FEATURE_GROUPS = {
    "level": ("last", "mean", "min", "max"),
    "spread": ("std", "mad"),
    "trend": ("slope", "delta"),
    "freshness": ("age", "stale"),
    "relative": ("jump", "step_ratio"),
    "context": ("ctx_shift", "ctx_trend", "ctx_std"),
    "quality": ("missing", "ctx_missing"),
    "complexity": ("entropy", "dom_freq", "hf_power", "peaks"),
    "cross": CROSS,
}
_HF_FRACTION = 0.25  # "high frequency": spectrum bins above the lowest quarter (> W/8 cycles per window)


def feature_names(signals: Sequence[str]) -> list[str]:
    return [f"{s}__{f}" for s in signals for f in PER_SIGNAL] + list(CROSS)


def feature_signal_weights(signals: Sequence[str]) -> np.ndarray:
    """(F, S) matrix that sums per-feature contributions into per-signal ones: a signal's own features
    count whole, a cross-signal feature is shared equally by the signals it is computed from."""
    out = np.zeros((len(signals) * len(PER_SIGNAL) + len(CROSS), len(signals)))
    for i in range(len(signals)):
        out[i * len(PER_SIGNAL) : (i + 1) * len(PER_SIGNAL), i] = 1.0
    for j, name in enumerate(CROSS):
        used = [signals.index(s) for s in CROSS_SIGNALS[name] if s in signals]
        out[len(signals) * len(PER_SIGNAL) + j, used] = 1.0 / max(len(used), 1)
    return out


def group_columns(n_features: int, groups: Sequence[str]) -> np.ndarray:
    """Column indices of the feature groups in a feature matrix laid out by `feature_names`."""
    unknown = [g for g in groups if g not in FEATURE_GROUPS]
    if unknown or not groups:
        raise ValueError(f"feature groups {list(groups)}: choose one or more of {list(FEATURE_GROUPS)}")
    n_signals, rest = divmod(n_features - len(CROSS), len(PER_SIGNAL))
    if rest or n_signals < 1:
        raise ValueError(f"{n_features} columns is not a feature matrix of this module's layout")
    wanted = {f for g in groups for f in FEATURE_GROUPS[g]}
    cols = [i * len(PER_SIGNAL) + j for i in range(n_signals) for j, f in enumerate(PER_SIGNAL) if f in wanted]
    cols += [n_signals * len(PER_SIGNAL) + j for j, f in enumerate(CROSS) if f in wanted]
    return np.array(cols, dtype=np.intp)


@dataclass(frozen=True)
class WindowGeometry:
    """What a model sees of the history behind a scored second.

    `window_s` seconds in all (what a request carries); the last `recent_s` described in detail; the
    whole window summarised in blocks of `block_s` seconds (context: how the recent part compares with
    the patient's own earlier values); the last `sequence_s` seconds, in steps of `sequence_step_s`, as the
    LSTM autoencoder's sequence."""

    window_s: int
    recent_s: int
    block_s: int
    sequence_s: int
    sequence_step_s: int

    def __post_init__(self) -> None:
        problems = []
        if not 8 <= self.recent_s <= self.window_s:
            problems.append(f"recent_s ({self.recent_s}) must be within [8, window_s ({self.window_s})]")
        if self.block_s < 1 or self.window_s % self.block_s:
            problems.append(f"window_s ({self.window_s}) must be a multiple of block_s ({self.block_s})")
        if not 1 <= self.sequence_s <= self.window_s or self.sequence_s % max(self.sequence_step_s, 1):
            problems.append(f"sequence_s ({self.sequence_s}) must be <= window_s and a multiple of "
                            f"sequence_step_s ({self.sequence_step_s})")
        if problems:
            raise ConfigError("window geometry: " + "; ".join(problems))


def window_features(windows: np.ndarray, signals: Sequence[str], geometry: WindowGeometry) -> np.ndarray:
    """(N, S, window_s) raw windows (NaN = missing) -> (N, F) float64 features named by `feature_names`.
    Values are read as float32 (what the dataset stores and monitors display). The per-signal and
    cross-signal features are computed in one compiled pass per signal (`biostream.feature_kernel`); the
    spectrum of the recent part with numpy's FFT."""
    full = np.ascontiguousarray(windows, dtype=np.float32)
    if full.ndim != 3 or full.shape[1] != len(signals):
        raise ValueError(f"windows must have shape (n, {len(signals)} signals, window_s), got {full.shape}")
    n, s, w = full.shape
    if w != geometry.window_s:
        raise ValueError(f"windows have {w} seconds, the geometry {geometry.window_s}")
    r = geometry.recent_s
    feats = np.empty((n, s, len(PER_SIGNAL)))
    cross = np.empty((n, len(CROSS)))
    centred = np.empty((n, s, r))
    counts = np.empty((n, s), dtype=np.int64)
    idx = np.array([list(signals).index(k) if k in signals else -1 for k in ("hr", "sbp", "dbp", "map")])
    window_kernel(full, r, geometry.block_s, idx, feats, cross, centred, counts)
    # spectrum of the mean-filled, centred recent part, without DC
    spec = np.abs(np.fft.rfft(centred, axis=-1))[..., 1:] ** 2
    total_power = spec.sum(axis=-1)
    k_hf = max(1, int(round(spec.shape[-1] * _HF_FRACTION)))
    ok = (counts >= 4) & (total_power > 1e-12)
    feats[..., DOM_FREQ] = np.where(ok, (np.argmax(spec, axis=-1) + 1) / r, np.nan)  # Hz
    feats[..., HF_POWER] = np.where(
        ok, spec[..., k_hf:].sum(axis=-1) / np.where(total_power > 0, total_power, 1.0), np.nan)
    return np.concatenate([feats.reshape(n, s * len(PER_SIGNAL)), cross], axis=1)


def sequence_view(windows: np.ndarray, geometry: WindowGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, window_s) -> the last `sequence_s` seconds as ((N, T, S) step means, (N, T, S) 1.0 where the
    step had data), T = sequence_s / sequence_step_s."""
    step_s = geometry.sequence_step_s
    x = np.asarray(windows, dtype=np.float64)[..., -geometry.sequence_s :]
    n, s, w = x.shape
    blocks = x.reshape(n, s, w // step_s, step_s)
    observed = ~np.isnan(blocks)
    cnt = observed.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        means = np.where(cnt > 0, np.where(observed, blocks, 0.0).sum(axis=-1) / np.maximum(cnt, 1), np.nan)
    return means.transpose(0, 2, 1), (cnt > 0).astype(np.float64).transpose(0, 2, 1)


# --------------------------------------------------------------------------------------------------
# Windows of whole recordings
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Imputation and scaling, fitted on training patients only
# --------------------------------------------------------------------------------------------------

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
    (README: Results)."""

    feature_median: np.ndarray
    feature_scale: np.ndarray
    signal_median: np.ndarray
    signal_scale: np.ndarray
    clip: float = 5.0

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
        return cls(fm, fs, sm, ss, clip)

    def transform(self, features: np.ndarray) -> np.ndarray:
        z = (np.asarray(features, dtype=np.float64) - self.feature_median) / self.feature_scale
        z = np.where(np.isnan(z), 0.0, z)  # imputed at the training median
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def transform_sequence(self, seq: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(
            np.asarray(d["feature_median"]),
            np.asarray(d["feature_scale"]),
            np.asarray(d["signal_median"]),
            np.asarray(d["signal_scale"]),
            float(d["clip"]),
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


# --------------------------------------------------------------------------------------------------
# From raw windows to what a detector reads
# --------------------------------------------------------------------------------------------------


@dataclass
class InputPipeline:
    """Raw windows -> a detector's input view. The same object serves training, evaluation and serving."""

    signals: tuple[str, ...]
    geometry: WindowGeometry
    preprocessor: Preprocessor

    def input_length(self, kind: str) -> int:
        """Seconds of history the input view `kind` reads: the sequence view only its last `sequence_s`."""
        return self.geometry.sequence_s if kind == "sequence" else self.geometry.window_s

    def check(self, windows: np.ndarray, kind: str = "window") -> np.ndarray:
        """Raw windows (n, S, >= input_length(kind)), cut to their last `input_length(kind)` seconds (float32
        windows stay float32: the features read float32 values)."""
        windows = np.asarray(windows)
        if not np.issubdtype(windows.dtype, np.floating):
            windows = windows.astype(np.float64)
        need = self.input_length(kind)
        if windows.ndim != 3 or windows.shape[1] != len(self.signals) or windows.shape[2] < need:
            raise ValueError(f"windows must have shape (n, {len(self.signals)} signals, >= {need} seconds), "
                             f"got {windows.shape}")
        return windows[..., windows.shape[2] - need :]

    def features(self, raw_features: np.ndarray) -> np.ndarray:
        """Scaled features from raw features (as the featurize stage stored them)."""
        return self.preprocessor.transform(raw_features)

    def view(self, kind: str, windows: np.ndarray) -> np.ndarray:
        """The input view `kind` ("features", "sequence" or "window") of raw windows (n, S, window_s)."""
        windows = self.check(windows, kind)
        if kind == "window":
            return windows.astype(np.float64, copy=False)
        if kind == "features":  # float32 first, exactly as the featurize stage stores them
            raw = window_features(windows, self.signals, self.geometry).astype(np.float32)
            return self.preprocessor.transform(raw)
        if kind == "sequence":
            return self._sequence(windows)
        raise ValueError(f"unknown input view '{kind}'; expected features, sequence or window")

    def _sequence(self, windows: np.ndarray) -> np.ndarray:
        """The sequence view of windows that end with at least the last `sequence_s` seconds."""
        seq, mask = sequence_view(windows, self.geometry)
        z, m = self.preprocessor.transform_sequence(seq, mask)
        return np.concatenate([z, m], axis=-1)

    def iter_views(
        self, kind: str, rows: pd.DataFrame, vitals: pd.DataFrame, chunk: int = 512, last_s: int | None = None
    ) -> Iterator[np.ndarray]:
        """The input view of rows of a feature table (as `featurize` writes it), `chunk` rows at a time:
        scaled from the stored features, or rebuilt from the raw `vitals` windows for the sequence and
        window views (whole windows of many rows would not fit in memory). `last_s`: of the window view,
        only the last seconds (for a detector that reads no more: `BaseDetector.reads_last_s`)."""
        if kind == "window" and last_s is not None and last_s < self.geometry.window_s:
            for i in range(0, len(rows), chunk):
                part = rows.iloc[i : i + chunk]
                yield windows_at(vitals, self.signals, last_s, part["patient_id"].to_numpy(),
                                 part["time_s"].to_numpy()).astype(np.float64, copy=False)
            return
        for i in range(0, len(rows), chunk):
            part = rows.iloc[i : i + chunk]
            if kind == "features":
                yield self.features(part[feature_names(self.signals)].to_numpy())
            elif kind == "sequence":  # only the tail of each window is read: do not build whole windows
                tails = windows_at(vitals, self.signals, self.geometry.sequence_s, part["patient_id"].to_numpy(),
                                   part["time_s"].to_numpy())
                yield self._sequence(tails)
            else:
                windows = windows_at(vitals, self.signals, self.geometry.window_s, part["patient_id"].to_numpy(),
                                     part["time_s"].to_numpy())
                yield self.view(kind, windows)

    def view_of_rows(self, kind: str, rows: pd.DataFrame, vitals: pd.DataFrame) -> np.ndarray:
        """All of `iter_views` at once (for fitting; the window view of many rows is large)."""
        parts = list(self.iter_views(kind, rows, vitals, chunk=max(len(rows), 1) if kind == "features" else 512))
        return np.concatenate(parts) if parts else np.empty((0,))

    def to_dict(self) -> dict[str, Any]:
        return {"signals": list(self.signals), "geometry": asdict(self.geometry),
                "features": feature_names(self.signals), "preprocessor": self.preprocessor.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputPipeline:
        return cls(tuple(d["signals"]), WindowGeometry(**d["geometry"]), Preprocessor.from_dict(d["preprocessor"]))
