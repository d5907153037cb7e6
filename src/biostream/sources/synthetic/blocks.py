"""Building blocks of the simulator: pure, vectorised functions of a random generator and arrays."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter


def ou_process(rng: np.random.Generator, n: int, sd: float, tau_s: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck process sampled at 1 Hz (AR(1) with a = exp(-1/tau))."""
    a = float(np.exp(-1.0 / tau_s))
    x0 = rng.normal(0.0, sd)
    eps = rng.normal(0.0, sd * np.sqrt(1.0 - a * a), n)
    return lfilter([1.0], [1.0, -a], eps, zi=[a * x0])[0]


def low_pass(x: np.ndarray, tau_s: float) -> np.ndarray:
    """First-order lag with time constant tau_s (starts at x[0])."""
    alpha = 1.0 - float(np.exp(-1.0 / tau_s))
    return lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])[0]


def trapezoid(n: int, ramp_up: int, plateau: int, ramp_down: int) -> np.ndarray:
    """0 -> 1 over ramp_up samples, 1 for plateau, 1 -> 0 over ramp_down; length n (the event length)."""
    up = np.linspace(0.0, 1.0, ramp_up + 1)[1:]
    down = np.linspace(1.0, 0.0, ramp_down + 1)[:-1]
    shape = np.concatenate([up, np.ones(plateau), down])
    return shape[:n]


def place_events(
    rng: np.random.Generator, n: int, durations: np.ndarray, warmup: int, min_gap: int
) -> np.ndarray:
    """Random non-overlapping start times for events of the given durations, at least `min_gap` apart,
    none before `warmup`. Events that do not fit are dropped from the end; returns starts (len <= k)."""
    durations = np.asarray(durations, dtype=np.int64)
    k = len(durations)
    while k and warmup + durations[:k].sum() + min_gap * k > n:
        k -= 1
    if k == 0:
        return np.empty(0, dtype=np.int64)
    free = n - warmup - durations[:k].sum() - min_gap * k
    gaps = np.floor(rng.dirichlet(np.ones(k + 1)) * free).astype(np.int64)[:k]
    offsets = np.concatenate([[0], np.cumsum(durations[:k] + min_gap)[:-1]])
    return warmup + np.cumsum(gaps) + offsets


def hold_samples(values: np.ndarray, sample_times: np.ndarray) -> np.ndarray:
    """What a display shows when `values` is measured only at `sample_times`: each reading held until
    the next; NaN before the first."""
    n = len(values)
    idx = np.searchsorted(sample_times, np.arange(n), side="right") - 1
    out = np.full(n, np.nan)
    ok = idx >= 0
    out[ok] = values[sample_times[idx[ok]]]
    return out

