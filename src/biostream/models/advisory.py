"""Advisories: a warning that a bedside rule's event is likely soon, beside the alarms (never instead of them).

Every candidate (`configs/advisories.yaml`) is a scorer with one contract: on a recording's seconds (rows sorted by
patient and time, `breaks` where a patient or a jump in time starts a new stretch) it gives, per rule kind it covers,
a score per second that is > 0 where the advisory is on, computed from that second and the seconds before it only
(causal: what a bed's window holds). The baselines:

- `current`: each rule's own limit on the current value, without its duration (the current MAP alone, generalised).
- `raised`: a raised limit per rule kind ("MAP < 73").
- `extrapolated`: a least-squares line over the last `fit_s` seconds, crossing the rule's limit `ahead_s` ahead.
- `personalised`: the patient's own median -/+ k IQR over the last `history_s`, once `min_seen_s` are seen.
- `gated`: a raised limit that warns only while the value moves towards the rule's limit (the least-squares line
  over `fit_s` by at least `towards`) or crossed the rule's limit within `recent_s` (a recurrence is likely),
  and not while the rule itself holds (beyond its limit for its duration: the alarm's own time, not "soon").

`advisories` turns scores into advisory seconds and episodes with the alarm policy (k of n seconds, refractory
merge): an advisory episode is made as an alarm episode is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biostream.core.config import AlarmRule
from biostream.core.params import AlarmPolicy
from biostream.data.labels import segment_starts
from biostream.models.alarms import alarm_episodes, apply_policy
from biostream.models.candidates import Candidate, Current, Extrapolated, Gated, Personalised, Raised, kinds_of

# ---------------------------------------------------------------------------------------------------------------
# Scores: per second and rule kind, > 0 where the advisory is on
# ---------------------------------------------------------------------------------------------------------------


def margin(value: np.ndarray, limit: np.ndarray | float, rule: AlarmRule) -> np.ndarray:
    """How far `value` is beyond `limit` in the rule's direction, in the rule's units (> 0: beyond; NaN: no value)."""
    beyond = value - limit if rule.above else limit - value
    return beyond / rule.unit


def rolling_sum(values: np.ndarray, breaks: np.ndarray, n: int) -> np.ndarray:
    """Sum of the last n rows (this one included), not crossing a stretch's start."""
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    idx = np.arange(len(values))
    start = np.maximum.accumulate(np.where(breaks, idx, 0))
    return c[idx + 1] - c[np.maximum(idx - n + 1, start)]


def extrapolated(values: np.ndarray, breaks: np.ndarray, fit_s: int, ahead_s: int | tuple[int, ...],
                 min_fraction: float) -> np.ndarray | tuple[np.ndarray, ...]:
    """The least-squares line through the last `fit_s` seconds' values, read `ahead_s` ahead (NaN where fewer than
    `min_fraction` of them have a value, or they are all one second); for a tuple of `ahead_s`, one array each, from
    one line (its sums computed once)."""
    idx = np.arange(len(values))
    x = (idx - np.maximum.accumulate(np.where(breaks, idx, 0))).astype(np.float64)  # seconds into the stretch
    ok = np.isfinite(values)
    y = np.where(ok, values, 0.0)
    w = ok.astype(np.float64)
    sums = [rolling_sum(v, breaks, fit_s) for v in (w, x * w, y, x * x * w, x * y)]
    return _line_ahead(sums, x, ahead_s, max(2.0, min_fraction * fit_s))


def extrapolated_last(values: np.ndarray, fit_s: int, ahead_s: int | tuple[int, ...],
                      min_fraction: float) -> np.ndarray | tuple[np.ndarray, ...]:
    """`extrapolated` at the last second of each row of `values` (m, T), from its last `fit_s` columns only (NaN:
    missing, as before a recording starts): what a bed's window gives for its newest second, without the rolling
    sums of every second before it (the stream's and /predict's fast path; equal to `extrapolated` to rounding)."""
    v = values[:, -fit_s:]
    ok = np.isfinite(v)
    y = np.where(ok, v, 0.0)
    w = ok.astype(np.float64)
    x = np.arange(v.shape[1], dtype=np.float64)
    sums = [w.sum(axis=1), w @ x, y.sum(axis=1), w @ (x * x), y @ x]  # matrix-vector products: one pass each
    return _line_ahead(sums, x[-1], ahead_s, max(2.0, min_fraction * fit_s))


def _line_ahead(sums: list[np.ndarray], x: np.ndarray | float, ahead_s: int | tuple[int, ...],
                min_count: float) -> np.ndarray | tuple[np.ndarray, ...]:
    """The least-squares line of the weighted sums (count, x, y, x^2, xy) read `ahead_s` after `x` (each of a
    tuple); NaN with fewer than `min_count` values or no spread in x."""
    n, sx, sy, sxx, sxy = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = sx / n, sy / n
        var = sxx / n - mx * mx
        slope = (sxy / n - mx * my) / var
        fitted = (n >= min_count) & (var > 1e-9)
        out = tuple(np.where(fitted, my + slope * (x + a - mx), np.nan)
                    for a in (ahead_s if isinstance(ahead_s, tuple) else (ahead_s,)))
    return out if isinstance(ahead_s, tuple) else out[0]


def _rolling(values: np.ndarray, breaks: np.ndarray, history_s: int, min_periods: int) -> pd.core.window.Rolling:
    stretch = np.cumsum(breaks)
    return pd.Series(values).groupby(stretch).rolling(history_s, min_periods=min_periods)


def rolling_stat(values: np.ndarray, breaks: np.ndarray, n: int, min_periods: int, stat: str) -> np.ndarray:
    """A pandas rolling statistic (`median`, `min`, `std`, ...) of the last n rows, within each stretch."""
    return getattr(_rolling(values, breaks, n, min_periods), stat)().to_numpy()


def personal_limit(values: np.ndarray, breaks: np.ndarray, rule: AlarmRule, c: Personalised) -> np.ndarray:
    """The patient's own median -/+ k IQR (towards the rule's limit) over the last `history_s`, where `min_seen_s`
    seconds of the stretch are seen and half the history has values; NaN before. The IQR counts at least one rule
    unit: a signal held between measurements has none, and its limit would be its median."""
    roll = _rolling(values, breaks, c.history_s, max(1, c.history_s // 2))
    q1, med, q3 = (roll.quantile(q).to_numpy() for q in (0.25, 0.5, 0.75))
    idx = np.arange(len(values))
    seen = idx - np.maximum.accumulate(np.where(breaks, idx, 0)) + 1
    spread = c.k * np.maximum(q3 - q1, rule.unit)
    limit = med + spread if rule.above else med - spread
    return np.where(seen >= c.min_seen_s, limit, np.nan)


def candidate_scores(candidate: Candidate, rules: tuple[AlarmRule, ...], frame: pd.DataFrame,
                     breaks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per rule kind the candidate covers, its score per row of `frame` (patient_id, time_s and the signals, sorted
    by patient and time); > 0 where the advisory is on, NaN where the candidate has nothing to say (no value)."""
    if breaks is None:
        breaks = segment_starts(frame["patient_id"].to_numpy(), frame["time_s"].to_numpy())
    by_kind = {r.kind: r for r in rules}
    out: dict[str, np.ndarray] = {}
    for kind in kinds_of(candidate, rules):
        rule = by_kind[kind]
        if rule.signal not in frame:
            out[kind] = np.full(len(frame), np.nan)
            continue
        values = frame[rule.signal].to_numpy(np.float64)
        if isinstance(candidate, Current):
            out[kind] = margin(values, rule.threshold, rule)
        elif isinstance(candidate, Raised):
            out[kind] = margin(values, candidate.limits[kind], rule)
        elif isinstance(candidate, Extrapolated):
            ahead = extrapolated(values, breaks, candidate.fit_s, candidate.ahead_s, candidate.min_fraction)
            out[kind] = margin(ahead, rule.threshold, rule)
        elif isinstance(candidate, Gated):
            out[kind] = gated_score(values, rule, candidate, *gates(values, breaks, rule, candidate))
        else:
            out[kind] = margin(values, personal_limit(values, breaks, rule, candidate), rule)
    return out


def beyond(values: np.ndarray, rule: AlarmRule) -> np.ndarray:
    """1.0 where a value is beyond the rule's own limit, 0.0 elsewhere (no value included)."""
    with np.errstate(invalid="ignore"):
        return ((values > rule.threshold) if rule.above else (values < rule.threshold)).astype(np.float64)


def moving_towards(now: np.ndarray, ahead: np.ndarray, rule: AlarmRule) -> np.ndarray:
    """The line's change over `fit_s` towards the rule's limit, in the signal's unit (from its level now and `fit_s`
    ahead; NaN: no line)."""
    return ahead - now if rule.above else now - ahead


def gates(values: np.ndarray, breaks: np.ndarray, rule: AlarmRule, c: Gated) -> tuple[np.ndarray, ...]:
    """Per row of a recording: the line's change towards the limit, whether the rule's limit was crossed within
    `recent_s`, and whether the rule holds (beyond its limit for its whole duration)."""
    now, ahead = extrapolated(values, breaks, c.fit_s, (0, c.fit_s), c.min_fraction)
    out = beyond(values, rule)
    return (moving_towards(now, ahead, rule), rolling_sum(out, breaks, c.recent_s) > 0,
            rolling_sum(out, breaks, max(1, rule.min_duration_s)) >= max(1, rule.min_duration_s))


def gates_last(v: np.ndarray, rule: AlarmRule, c: Gated) -> tuple[np.ndarray, ...]:
    """`gates` at the last second of each row of `v` (m, T), from its own columns (as `extrapolated_last`)."""
    now, ahead = extrapolated_last(v, c.fit_s, (0, c.fit_s), c.min_fraction)
    out = beyond(v, rule)
    held = max(1, rule.min_duration_s)
    return (moving_towards(now, ahead, rule), out[:, -c.recent_s:].sum(axis=1) > 0,
            (out[:, -held:].sum(axis=1) >= held) if v.shape[1] >= held else np.zeros(len(v), dtype=bool))


def gated_score(values: np.ndarray, rule: AlarmRule, c: Gated, moving: np.ndarray, recent: np.ndarray,
                holds: np.ndarray) -> np.ndarray:
    """The raised limit's margin where a gate is open (moving towards the limit, or crossed recently) and the rule
    does not hold; elsewhere below 0 (still ordered by the margin, for the AUROC)."""
    m = margin(values, c.limits[rule.kind], rule)
    with np.errstate(invalid="ignore"):
        open_ = ((moving >= c.towards[rule.kind]) | recent) & ~holds
    return np.where(open_, m, np.minimum(m, 0.0) - 1.0)


def window_scores(candidate: Candidate, rules: tuple[AlarmRule, ...], values: Mapping[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    """`candidate_scores` at the last second of each window: `values` per signal (m, T), each row a window (its
    seconds before the recording NaN); the rows' own history only. The baselines that read the current value or a
    line over the last seconds are computed on those columns alone; a personal limit (a rolling quantile) on the
    windows' seconds as `candidate_scores` does."""
    by_kind = {r.kind: r for r in rules}
    out: dict[str, np.ndarray] = {}
    for kind in kinds_of(candidate, rules):
        rule = by_kind[kind]
        v = values.get(rule.signal)
        if v is None:
            continue
        if isinstance(candidate, Current):
            out[kind] = margin(v[:, -1], rule.threshold, rule)
        elif isinstance(candidate, Raised):
            out[kind] = margin(v[:, -1], candidate.limits[kind], rule)
        elif isinstance(candidate, Extrapolated):
            ahead = extrapolated_last(v, candidate.fit_s, candidate.ahead_s, candidate.min_fraction)
            out[kind] = margin(ahead, rule.threshold, rule)
        elif isinstance(candidate, Gated):
            out[kind] = gated_score(v[:, -1], rule, candidate, *gates_last(v, rule, candidate))
        else:
            m, t = v.shape
            breaks = np.zeros(m * t, dtype=bool)
            breaks[::t] = True
            flat = v.reshape(-1)
            out[kind] = margin(flat, personal_limit(flat, breaks, rule, candidate), rule)[t - 1::t]
    return out


@dataclass(frozen=True)
class Advised:
    """A candidate's advisories on some rows: per kind, the score and whether an advisory is on (after the alarm
    policy), and the episodes (patient_id, start_s, end_s, kind)."""

    scores: dict[str, np.ndarray]
    on: dict[str, np.ndarray]
    episodes: pd.DataFrame

    def any_on(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        for flags in self.on.values():
            out |= flags
        return out


def advisories(scores: dict[str, np.ndarray], frame: pd.DataFrame, policy: AlarmPolicy,
               breaks: np.ndarray | None = None, episodes: bool = True) -> Advised:
    """Advisory seconds and episodes from per-kind scores, made as alarms are (`apply_policy`: k of the last n
    seconds > 0, episodes within the refractory period merged). `episodes=False`: the seconds only (empty
    episodes; what a window's answer needs)."""
    pid, t = frame["patient_id"].to_numpy(), frame["time_s"].to_numpy()
    if breaks is None:
        breaks = segment_starts(pid, t)
    on, parts = {}, []
    for kind, score in scores.items():
        flags = apply_policy(pid, t, np.nan_to_num(score, nan=-1.0), 0.0, policy, breaks).astype(bool)
        on[kind] = flags
        if episodes:
            parts.append(alarm_episodes(pid, t, flags, breaks).assign(kind=kind))
    episodes = (pd.concat(parts, ignore_index=True) if parts else
                pd.DataFrame({"patient_id": [], "start_s": [], "end_s": [], "kind": []}))
    return Advised(scores, on, episodes)
