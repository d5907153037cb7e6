"""The features of a window: one function for training, evaluation and serving.

`window_features` turns raw windows (N, S, window_s) into (N, F) features: per signal over the recent part, against
the patient's own usual behaviour (the older half of the window) and over the whole window, and across signals
(each feature: docs/pipeline.md#features-and-detectors). Missing values (NaN) are handled explicitly: a feature that
cannot be computed is NaN, `Preprocessor` imputes it, and the fraction-missing features tell models it happened.
`sequence_view` is the LSTM autoencoder's input. The per-signal loops are compiled (`biostream.features.kernel`);
the names, groups and layout are here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biostream.features.kernel import DOM_FREQ, HF_POWER, window_kernel
from biostream.features.windows import WindowGeometry

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


def window_features(windows: np.ndarray, signals: Sequence[str], geometry: WindowGeometry,
                    read: np.ndarray | None = None) -> np.ndarray:
    """(N, S, window_s) raw windows (NaN = missing) -> (N, F) float64 features named by `feature_names`.
    Values are read as float32 (what the dataset stores and monitors display). The per-signal and
    cross-signal features are computed in one compiled pass per signal (`biostream.features.kernel`); the
    spectrum of the recent part with numpy's FFT. `read` (N, S): the signals a learned model may read
    (`biostream.features.readiness`); the others are described as missing throughout (default: all read)."""
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
    read = np.ones((n, s), dtype=np.bool_) if read is None else np.ascontiguousarray(read, dtype=np.bool_)
    if read.shape != (n, s):
        raise ValueError(f"read must have shape ({n}, {s}), got {read.shape}")
    window_kernel(full, r, geometry.block_s, idx, feats, cross, centred, counts, read)
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
    """(N, S, window_s) -> the last `sequence_s` seconds, average-pooled to `sequence_step_s` steps, for the LSTM
    autoencoder: ((N, T, S) step means, (N, T, S) 1.0 where the step had data), T = sequence_s / sequence_step_s."""
    step_s = geometry.sequence_step_s
    x = np.asarray(windows, dtype=np.float64)[..., -geometry.sequence_s :]
    n, s, w = x.shape
    blocks = x.reshape(n, s, w // step_s, step_s)
    observed = ~np.isnan(blocks)
    cnt = observed.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        means = np.where(cnt > 0, np.where(observed, blocks, 0.0).sum(axis=-1) / np.maximum(cnt, 1), np.nan)
    return means.transpose(0, 2, 1), (cnt > 0).astype(np.float64).transpose(0, 2, 1)

