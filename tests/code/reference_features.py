"""A plain numpy statement of `biostream.features.window_features` (its definitions, vectorised over windows,
as the featurize stage computed them until the compiled kernel replaced them): the oracle that
tests/code/test_feature_kernel.py holds `biostream.features.kernel` to. Slow (~150 numpy calls), readable."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from biostream.features import PER_SIGNAL, WindowGeometry
from biostream.features.compute import _HF_FRACTION


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
