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


def _ffill_last_axis(x: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along the last axis (leading NaN stay NaN)."""
    observed = ~np.isnan(x)
    idx = np.where(observed, np.arange(x.shape[-1]), 0)
    np.maximum.accumulate(idx, axis=-1, out=idx)
    out = np.take_along_axis(x, idx, axis=-1)
    return out


def _nan_median_sorted(sorted_x: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Median along the last axis of an array sorted with NaN last, given the count of non-NaN values."""
    lo = np.clip((count - 1) // 2, 0, None)
    hi = np.clip(count // 2, 0, None)
    a = np.take_along_axis(sorted_x, lo[..., None], axis=-1)[..., 0]
    b = np.take_along_axis(sorted_x, hi[..., None], axis=-1)[..., 0]
    med = 0.5 * (a + b)
    return np.where(count > 0, med, np.nan)


def window_features(windows: np.ndarray, signals: Sequence[str], geometry: WindowGeometry) -> np.ndarray:
    """(N, S, window_s) raw windows (NaN = missing) -> (N, F) float64 features named by `feature_names`."""
    windows = np.asarray(windows)
    x = np.ascontiguousarray(windows[..., -geometry.recent_s :], dtype=np.float64)
    # the whole window is summarised in float32: displayed values lose nothing, memory traffic halves
    full = np.ascontiguousarray(windows, dtype=np.float32)
    n, s, w = x.shape
    observed = ~np.isnan(x)
    count = observed.sum(axis=-1)
    has = count > 0
    safe_count = np.maximum(count, 1)
    x0 = np.where(observed, x, 0.0)
    t = np.arange(w, dtype=np.float64)

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(has, x0.sum(axis=-1) / safe_count, np.nan)
        centred = np.where(observed, x - mean[..., None], 0.0)
        var = (centred * centred).sum(axis=-1) / safe_count
        std = np.where(has, np.sqrt(var), np.nan)
        xmin = np.where(has, np.where(observed, x, np.inf).min(axis=-1), np.nan)
        xmax = np.where(has, np.where(observed, x, -np.inf).max(axis=-1), np.nan)

        # least-squares slope over observed points, per minute
        t_mean = np.where(observed, t, 0.0).sum(axis=-1) / safe_count
        tc = np.where(observed, t - t_mean[..., None], 0.0)
        sxx = (tc * tc).sum(axis=-1)
        slope = np.where(count >= 2, (tc * centred).sum(axis=-1) / np.where(sxx > 0, sxx, 1.0) * 60.0, np.nan)

        ff = _ffill_last_axis(x)
        last = ff[..., -1]
        first_idx = np.argmax(observed, axis=-1)
        first = np.take_along_axis(x, first_idx[..., None], axis=-1)[..., 0]
        delta = np.where(has, last - first, np.nan)

        sorted_x = np.sort(x, axis=-1)
        median = _nan_median_sorted(sorted_x, count)
        dev = np.sort(np.abs(x - median[..., None]), axis=-1)
        mad = _nan_median_sorted(dev, count)

        missing = 1.0 - count / w

        # permutation entropy, order 3 (ties by comparison), normalised to [0, 1]
        a, b, c = x[..., :-2], x[..., 1:-1], x[..., 2:]
        valid = ~np.isnan(a + b + c)
        code = (4 * (a < b) + 2 * (b < c) + (a < c)).astype(np.intp)
        code += (np.arange(n * s, dtype=np.intp) * 8).reshape(n, s, 1)
        counts = np.bincount(code[valid], minlength=n * s * 8).reshape(n, s, 8).astype(np.float64)
        total = counts.sum(axis=-1)
        p = counts / np.maximum(total, 1.0)[..., None]
        plogp = p * np.log(np.where(p > 0, p, 1.0))
        entropy = np.where(total >= 2, -plogp.sum(axis=-1) / np.log(6.0), np.nan)

        # spectrum of the mean-filled, centred window
        spec = np.abs(np.fft.rfft(centred, axis=-1)) ** 2
        spec = spec[..., 1:]  # no DC
        total_power = spec.sum(axis=-1)
        k_hf = max(1, int(round(spec.shape[-1] * _HF_FRACTION)))
        dom = (np.argmax(spec, axis=-1) + 1) / w  # Hz (1 Hz sampling)
        spectral_ok = (count >= 4) & (total_power > 1e-12)
        dom_freq = np.where(spectral_ok, dom, np.nan)
        hf_power = np.where(spectral_ok, spec[..., k_hf:].sum(axis=-1) / np.where(total_power > 0, total_power, 1.0),
                            np.nan)

        peaks = ((b > a) & (b >= c)).sum(axis=-1).astype(np.float64)  # a plateau top counts once

        # seconds since the (forward-filled) value last changed or first appeared; W if not in this window
        prev, cur = ff[..., :-1], ff[..., 1:]
        fresh = (~np.isnan(cur)) & (np.isnan(prev) | (cur != prev))
        fresh = np.concatenate([observed[..., :1], fresh], axis=-1)
        any_fresh = fresh.any(axis=-1)
        last_fresh = w - 1 - np.argmax(fresh[..., ::-1], axis=-1)
        age = np.where(any_fresh, (w - 1 - last_fresh).astype(np.float64), float(w))
        # stale: observed seconds since the last change, in units of this signal's usual time between changes
        # (a frozen arterial line stands out; a cuff's hold does not). The patient's usual behaviour comes
        # from the older half of the window, as in _context_features.
        seen = np.take_along_axis(np.cumsum(observed, axis=-1), last_fresh[..., None], axis=-1)[..., 0]
        frozen = np.where(any_fresh, count - seen, count).astype(np.float64)
        half = full.shape[-1] // 2
        old_moves, old_step = _step_stats(full[..., :half])
        old_obs = half - np.count_nonzero(np.isnan(full[..., :half]), axis=-1)
        # fewer than 3 changes (the start of a cuff recording: a minute of one held reading) say nothing of
        # the usual interval; such a window's staleness is unknown (imputed), not extreme
        interval = np.where(old_moves >= 3, old_obs / (old_moves + 1.0), np.nan)
        stale = np.log1p(frozen / interval)  # log: runs of equal values are geometric, heavy-tailed

        jump = last - median  # the newest value against the recent median: onsets and spikes, at once
        step_ratio = np.log(_step_stats(x)[1] / old_step)

    ctx_shift, ctx_trend, ctx_std, ctx_missing = _context_features(full, mean, geometry.block_s)
    per_signal = np.stack(
        [last, mean, std, xmin, xmax, slope, delta, mad, missing, entropy, dom_freq, hf_power, peaks, age,
         stale, jump, step_ratio, ctx_shift, ctx_trend, ctx_std, ctx_missing],
        axis=-1,
    )  # (N, S, len(PER_SIGNAL))
    out = per_signal.reshape(n, s * len(PER_SIGNAL))

    idx = {sig: i for i, sig in enumerate(signals)}
    with np.errstate(invalid="ignore", divide="ignore"):
        shock = last[:, idx["hr"]] / last[:, idx["sbp"]] if {"hr", "sbp"} <= idx.keys() else np.full(n, np.nan)
        pp = mean[:, idx["sbp"]] - mean[:, idx["dbp"]] if {"sbp", "dbp"} <= idx.keys() else np.full(n, np.nan)
        if {"hr", "map"} <= idx.keys():
            h, m = x[:, idx["hr"]], x[:, idx["map"]]
            both = ~(np.isnan(h) | np.isnan(m))
            nb = both.sum(axis=-1)
            nbs = np.maximum(nb, 1)
            hm = np.where(both, h, 0.0).sum(axis=-1) / nbs
            mm = np.where(both, m, 0.0).sum(axis=-1) / nbs
            hc = np.where(both, h - hm[:, None], 0.0)
            mc = np.where(both, m - mm[:, None], 0.0)
            den = np.sqrt((hc * hc).sum(axis=-1) * (mc * mc).sum(axis=-1))
            corr = np.where((nb >= 3) & (den > 1e-12), (hc * mc).sum(axis=-1) / np.where(den > 0, den, 1.0), np.nan)
        else:
            corr = np.full(n, np.nan)
        if {"sbp", "dbp", "map"} <= idx.keys():
            # MAP against DBP + PP/3: a pressure that moves alone (transducer, calibration) breaks the
            # relation; the patient's own offset (older half of the window) is subtracted
            def residual(sbp: np.ndarray, dbp: np.ndarray, map_: np.ndarray) -> np.ndarray:
                return map_ - dbp - (sbp - dbp) / 3.0

            older = full[..., : full.shape[-1] // 2]
            r = residual(older[:, idx["sbp"]], older[:, idx["dbp"]], older[:, idx["map"]])
            rn = ~np.isnan(r)
            base = np.where(rn.any(axis=-1), np.where(rn, r, 0.0).sum(axis=-1) / np.maximum(rn.sum(axis=-1), 1), 0.0)
            map_res = residual(last[:, idx["sbp"]], last[:, idx["dbp"]], last[:, idx["map"]]) - base
        else:
            map_res = np.full(n, np.nan)
    return np.concatenate([out, np.stack([shock, pp, corr, map_res], axis=-1)], axis=1)


def _step_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Over the last axis: the number of changes of value between consecutive observed seconds and the mean
    absolute size of those changes (NaN when fewer than 3). The mean step is measurement noise, which a
    held cuff value lacks and a noisy sensor has in excess."""
    d = np.diff(x.astype(np.float32, copy=False), axis=-1)  # displayed values: float32 is exact enough
    np.abs(d, out=d)
    k = np.count_nonzero(d > 0, axis=-1)  # NaN compares False
    np.nan_to_num(d, copy=False, nan=0.0)
    total = (d.reshape(-1, d.shape[-1]) @ np.ones(d.shape[-1], dtype=d.dtype)).reshape(k.shape)
    mean = np.where(k >= 3, total / np.maximum(k, 1), np.nan)
    return k, mean


def _context_features(
    x: np.ndarray, recent_mean: np.ndarray, block_s: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compare the recent part with the whole window's history, summarised as block means.

    ctx_shift: recent mean minus the median block mean of the older half of the window (the patient's own
    baseline: a level shift or drift shows here long after its onset left the recent part);
    ctx_trend: least-squares slope of the block means, per hour; ctx_std: spread of the block means;
    ctx_missing: fraction of the whole window missing."""
    n, s, w = x.shape
    nb = w // block_s
    flat = x.reshape(n * s * nb, block_s)
    missing_flat = np.isnan(flat)
    ones = np.ones(block_s, dtype=x.dtype)  # block sums as matrix-vector products: far faster than .sum()
    cnt = (block_s - missing_flat.astype(x.dtype) @ ones).reshape(n, s, nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        sums = (np.where(missing_flat, 0, flat) @ ones).reshape(n, s, nb)
        bmean = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
        bobs = cnt > 0
        half = nb // 2
        old_count = bobs[..., :half].sum(axis=-1)
        old = np.sort(bmean[..., :half], axis=-1)
        baseline = _nan_median_sorted(old, old_count) if half else np.full((n, s), np.nan)
        shift = recent_mean - baseline

        nbo = bobs.sum(axis=-1)
        safe = np.maximum(nbo, 1)
        b0 = np.where(bobs, bmean, 0.0)
        m = b0.sum(axis=-1) / safe
        k = np.arange(nb, dtype=np.float64)
        k_mean = np.where(bobs, k, 0.0).sum(axis=-1) / safe
        kc = np.where(bobs, k - k_mean[..., None], 0.0)
        bc = np.where(bobs, bmean - m[..., None], 0.0)
        kxx = (kc * kc).sum(axis=-1)
        trend = np.where(nbo >= 3, (kc * bc).sum(axis=-1) / np.where(kxx > 0, kxx, 1.0) * (3600.0 / block_s), np.nan)
        spread = np.where(nbo >= 2, np.sqrt((bc * bc).sum(axis=-1) / safe), np.nan)
    missing = 1.0 - cnt.sum(axis=-1) / w
    return shift, trend, spread, missing


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
    padded = np.concatenate([np.full((length_s - 1, s), np.nan), values], axis=0)
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
    values = vitals[list(signals)].to_numpy(dtype=np.float64)
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
        """Raw windows (n, S, >= input_length(kind)) as float64, cut to their last `input_length(kind)` seconds."""
        windows = np.asarray(windows, dtype=np.float64)
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
            return windows
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
        self, kind: str, rows: pd.DataFrame, vitals: pd.DataFrame, chunk: int = 512
    ) -> Iterator[np.ndarray]:
        """The input view of rows of a feature table (as `featurize` writes it), `chunk` rows at a time:
        scaled from the stored features, or rebuilt from the raw `vitals` windows for the sequence and
        window views (whole windows of many rows would not fit in memory)."""
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
