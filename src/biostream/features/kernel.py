"""The compiled core of `biostream.features.window_features` (numba): one pass over each signal of each window.

Each signal is read once for its block means, once for its older half's changes and its recent part a few times, in
`nogil` loops (the service's HTTP thread runs meanwhile), instead of numpy's many calls and passes over the window.
tests/code/test_feature_kernel.py holds it to a plain numpy statement of the definitions
(tests/code/reference_features.py). Arithmetic is float64 over float32 values (what the dataset stores and monitors
display), reassociated only where exact (`_EXACT_SUMS`), so a window gives the same features on any CPU. Compiled on
first use and cached beside this file (`__pycache__`, or NUMBA_CACHE_DIR).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# The slots the kernel writes (f[0], f[1], ...): biostream.features.PER_SIGNAL and CROSS, in their order
# (tests/code/test_feature_kernel.py holds them equal)
LAYOUT = ("last", "mean", "std", "min", "max", "slope", "delta", "mad", "missing", "entropy", "dom_freq",
          "hf_power", "peaks", "age", "stale", "jump", "step_ratio", "ctx_shift", "ctx_trend", "ctx_std",
          "ctx_missing")
CROSS_LAYOUT = ("shock_index", "pulse_pressure", "hr_map_corr", "map_residual")
# each slot's index in a signal's row, by name (compile-time constants to numba)
(LAST, MEAN, STD, MIN, MAX, SLOPE, DELTA, MAD, MISSING, ENTROPY, DOM_FREQ, HF_POWER, PEAKS, AGE, STALE, JUMP,
 STEP_RATIO, CTX_SHIFT, CTX_TREND, CTX_STD, CTX_MISSING) = range(len(LAYOUT))  # DOM_FREQ, HF_POWER: the caller's
assert LAYOUT[CTX_MISSING] == "ctx_missing" and LAYOUT[DOM_FREQ] == "dom_freq" and LAYOUT[HF_POWER] == "hf_power"
SHOCK_INDEX, PULSE_PRESSURE, HR_MAP_CORR, MAP_RESIDUAL = range(len(CROSS_LAYOUT))

_JIT = {"nogil": True, "cache": True, "error_model": "numpy"}  # numpy semantics: x/0 is inf or nan, not an error
# float32 values summed in float64 are exact at these magnitudes, so loops that only add them may be vectorised in
# any order (`fastmath` reassociation) without changing a bit; every other loop keeps IEEE order
_EXACT_SUMS = {**_JIT, "fastmath": {"reassoc", "nsz"}}  # only for loops that add float32 values in float64

_NAN = np.nan


@numba.njit(**_EXACT_SUMS)
def _block_means(row: np.ndarray, block_s: int, bmean: np.ndarray) -> int:
    """Per block of `block_s` seconds the mean of its observed values (float32: their exact sum, rounded, over
    their count), NaN for a block without any. Returns the number of observed seconds in all blocks."""
    seen = 0
    for b in range(bmean.shape[0]):
        c = 0
        s = 0.0
        for t in range(b * block_s, (b + 1) * block_s):
            v = row[t]
            ok = v == v
            c += ok
            s += np.float64(v) if ok else 0.0
        seen += c
        bmean[b] = np.float32(s) / np.float32(c) if c > 0 else np.float32(_NAN)
    return seen


@numba.njit(**_EXACT_SUMS)
def _change_stats(row: np.ndarray, a: int, b: int) -> tuple[int, float, int]:
    """Over row[a:b]: the number of changes of value between consecutive observed seconds, their summed
    absolute size (float32 differences), and the number of observed seconds."""
    moves = 0
    step = 0.0
    obs = 0
    for t in range(a, b):
        v = row[t]
        obs += v == v
        if t + 1 < b:
            d = abs(row[t + 1] - v)
            up = d > 0  # False when either value is missing
            moves += up
            step += np.float64(d) if up else 0.0
    return moves, step, obs


@numba.njit(**_JIT)
def _select(v: np.ndarray, n: int, k: int) -> float:
    """The k-th smallest (0-based) of v[:n], which it reorders so that v[:k] <= v[k] <= v[k + 1:n]
    (quickselect, median-of-three pivot, three-way partition: runs of equal readings cost nothing)."""
    lo, hi = 0, n - 1
    while lo < hi:
        a, b, c = v[lo], v[(lo + hi) // 2], v[hi]
        p = max(min(a, b), min(max(a, b), c))
        lt, i, gt = lo, lo, hi
        while i <= gt:
            x = v[i]
            if x < p:
                v[i] = v[lt]
                v[lt] = x
                lt += 1
                i += 1
            elif x > p:
                v[i] = v[gt]
                v[gt] = x
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return p
    return v[lo]


@numba.njit(**_JIT)
def _median(v: np.ndarray, n: int) -> float:
    """The median of v[:n] (n >= 1; reorders v)."""
    hi = _select(v, n, n // 2)
    return hi if n % 2 else 0.5 * (v[: n // 2].max() + hi)


@numba.njit(**_JIT)
def _signal_features(row: np.ndarray, recent_s: int, block_s: int, f: np.ndarray, centred: np.ndarray,
                     x: np.ndarray, buf: np.ndarray, bmean: np.ndarray, oldb: np.ndarray) -> int:
    """One signal of one window, `row` (W,) float32, NaN = missing -> `f` (len(LAYOUT),) in LAYOUT order
    (DOM_FREQ and HF_POWER untouched) and `centred` (recent_s,), the recent values minus their mean, 0 where
    missing. `x`, `buf`, `bmean` (one per block) and `oldb` are scratch. Returns the number of observed recent
    seconds."""
    w = row.shape[0]
    r = recent_s
    cnt = 0
    tot = tsum = 0.0
    xmin, xmax = np.inf, -np.inf
    for t in range(r):
        v = np.float64(row[w - r + t])
        x[t] = v
        if v == v:
            buf[cnt] = v
            cnt += 1
            tot += v
            tsum += t
            xmin = min(xmin, v)
            xmax = max(xmax, v)
    f[MISSING] = 1.0 - cnt / r
    frozen = 0  # observed seconds since the value last changed
    mean = _NAN
    if cnt == 0:
        for q in (LAST, MEAN, STD, MIN, MAX, SLOPE, DELTA, MAD, ENTROPY, JUMP):
            f[q] = _NAN
        f[PEAKS] = 0.0
        f[AGE] = r  # age: no value in the recent part
        centred[:] = 0.0
    else:
        mean = tot / cnt
        tmean = tsum / cnt
        ss = sxx = sxy = 0.0
        first = last = _NAN
        last_fresh = seen = seen_at_fresh = 0
        for t in range(r):
            v = x[t]
            if v == v:
                c = v - mean
                centred[t] = c
                ss += c * c
                tc = t - tmean
                sxx += tc * tc
                sxy += tc * c
                seen += 1
                if first != first:
                    first = v
                if v != last:  # fresh: changed, or the first value seen (last is NaN)
                    last_fresh = t
                    seen_at_fresh = seen
                last = v
            else:
                centred[t] = 0.0
        med = _median(buf, cnt)
        for q in range(cnt):
            buf[q] = abs(buf[q] - med)
        f[LAST] = last
        f[MEAN] = mean
        f[STD] = math.sqrt(ss / cnt)
        f[MIN] = xmin
        f[MAX] = xmax
        f[SLOPE] = sxy / (sxx if sxx > 0 else 1.0) * 60.0 if cnt >= 2 else _NAN  # least-squares slope, per minute
        f[DELTA] = last - first
        f[MAD] = _median(buf, cnt)  # median absolute deviation
        f[AGE] = r - 1 - last_fresh
        frozen = cnt - seen_at_fresh
        f[JUMP] = last - med
        # permutation entropy (order 3, ties by comparison) over triplets of observed values; peaks
        pc = np.zeros(8)
        total = 0.0
        peaks = 0
        for t in range(r - 2):
            a, b, c = x[t], x[t + 1], x[t + 2]
            if a == a and b == b and c == c:
                pc[4 * (a < b) + 2 * (b < c) + (a < c)] += 1.0
                total += 1.0
            peaks += b > a and b >= c  # a plateau top counts once; False where missing
        f[PEAKS] = peaks
        if total >= 2:
            e = 0.0
            for q in range(8):
                if pc[q] > 0:
                    p = pc[q] / total
                    e += p * math.log(p)
            f[ENTROPY] = -e / math.log(6.0)
        else:
            f[ENTROPY] = _NAN
    # the patient's usual behaviour: the older half of the window
    old_moves, old_step_sum, old_obs = _change_stats(row, 0, w // 2)
    old_step = old_step_sum / old_moves if old_moves >= 3 else _NAN
    # fewer than 3 changes (the start of a cuff recording) say nothing of the usual interval: unknown
    interval = old_obs / (old_moves + 1.0) if old_moves >= 3 else _NAN
    f[STALE] = math.log1p(frozen / interval)
    moves, step_sum, _ = _change_stats(row, w - r, w)
    f[STEP_RATIO] = math.log((step_sum / moves if moves >= 3 else _NAN) / old_step)
    # context: the whole window as block means
    nb = bmean.shape[0]
    seen_all = _block_means(row, block_s, bmean)
    k = 0  # the older half's block means, sorted (insertion: a dozen or so)
    for b in range(nb // 2):
        v = bmean[b]
        if v == v:
            i = k
            while i > 0 and oldb[i - 1] > v:
                oldb[i] = oldb[i - 1]
                i -= 1
            oldb[i] = v
            k += 1
    f[CTX_SHIFT] = mean - np.float64(np.float32(0.5) * (oldb[(k - 1) // 2] + oldb[k // 2])) if k > 0 else _NAN
    nbo = 0
    bm_sum = k_sum = 0.0
    for b in range(nb):
        if bmean[b] == bmean[b]:
            nbo += 1
            bm_sum += bmean[b]
            k_sum += b
    m = bm_sum / max(nbo, 1)
    km = k_sum / max(nbo, 1)
    kxx = kxy = byy = 0.0
    for b in range(nb):
        if bmean[b] == bmean[b]:
            kc = b - km
            bc = np.float64(bmean[b]) - m
            kxx += kc * kc
            kxy += kc * bc
            byy += bc * bc
    f[CTX_TREND] = kxy / (kxx if kxx > 0 else 1.0) * (3600.0 / block_s) if nbo >= 3 else _NAN  # per hour
    f[CTX_STD] = math.sqrt(byy / max(nbo, 1)) if nbo >= 2 else _NAN
    f[CTX_MISSING] = 1.0 - seen_all / w
    return cnt


@numba.njit(**_JIT)
def _cross_features(win: np.ndarray, f: np.ndarray, recent_s: int, idx: np.ndarray, out: np.ndarray) -> None:
    """Across signals of one window `win` (S, W) float32 with its per-signal features `f` (S, len(LAYOUT)):
    shock index, pulse pressure, HR-MAP correlation over the recent part, MAP's residual against DBP + PP/3
    minus the patient's own (older half's mean). `idx`: the rows of hr, sbp, dbp, map (-1 when absent)."""
    hr, sbp, dbp, mp = idx[0], idx[1], idx[2], idx[3]
    w = win.shape[1]
    out[SHOCK_INDEX] = f[hr, LAST] / f[sbp, LAST] if hr >= 0 and sbp >= 0 else _NAN
    out[PULSE_PRESSURE] = f[sbp, MEAN] - f[dbp, MEAN] if sbp >= 0 and dbp >= 0 else _NAN
    out[HR_MAP_CORR] = _NAN
    if hr >= 0 and mp >= 0:
        n = 0
        hs = ms = 0.0
        for t in range(w - recent_s, w):
            h, m = np.float64(win[hr, t]), np.float64(win[mp, t])
            if h == h and m == m:
                n += 1
                hs += h
                ms += m
        hm, mm = hs / max(n, 1), ms / max(n, 1)
        hh = mm2 = hmx = 0.0
        for t in range(w - recent_s, w):
            h, m = np.float64(win[hr, t]), np.float64(win[mp, t])
            if h == h and m == m:
                hh += (h - hm) * (h - hm)
                mm2 += (m - mm) * (m - mm)
                hmx += (h - hm) * (m - mm)
        den = math.sqrt(hh * mm2)
        if n >= 3 and den > 1e-12:
            out[HR_MAP_CORR] = hmx / den
    out[MAP_RESIDUAL] = _NAN
    if sbp >= 0 and dbp >= 0 and mp >= 0:
        n = 0
        rs = 0.0
        for t in range(w // 2):
            res = win[mp, t] - win[dbp, t] - (win[sbp, t] - win[dbp, t]) / np.float32(3.0)  # float32, as displayed
            if res == res:
                n += 1
                rs += res
        base = rs / n if n > 0 else 0.0
        out[MAP_RESIDUAL] = f[mp, LAST] - f[dbp, LAST] - (f[sbp, LAST] - f[dbp, LAST]) / 3.0 - base


@numba.njit(**_JIT)
def window_kernel(windows: np.ndarray, recent_s: int, block_s: int, cross_idx: np.ndarray, feats: np.ndarray,
                  cross: np.ndarray, centred: np.ndarray, counts: np.ndarray, read: np.ndarray) -> None:
    """windows (N, S, W) float32 -> feats (N, S, len(LAYOUT)), cross (N, len(CROSS_LAYOUT)), centred (N, S, recent_s)
    and counts (N, S), the observed recent seconds (all preallocated by the caller). `read` (N, S): a signal not
    read is described as missing throughout (as if its row were all NaN, without copying the windows)."""
    n, s, w = windows.shape
    x = np.empty(recent_s)
    buf = np.empty(recent_s)
    nb = w // block_s
    bmean = np.empty(nb, np.float32)
    oldb = np.empty(max(nb // 2, 1), np.float32)
    missing = np.full(w, np.nan, np.float32)
    idx = np.empty_like(cross_idx)
    for i in range(n):
        for j in range(s):
            row = windows[i, j] if read[i, j] else missing
            counts[i, j] = _signal_features(row, recent_s, block_s, feats[i, j], centred[i, j], x, buf, bmean, oldb)
        for k in range(cross_idx.shape[0]):
            idx[k] = cross_idx[k] if cross_idx[k] >= 0 and read[i, cross_idx[k]] else -1
        _cross_features(windows[i], feats[i], recent_s, idx, cross[i])
