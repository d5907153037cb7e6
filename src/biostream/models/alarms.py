"""Alarm post-processing, as a monitor does it: from per-second scores to alarm episodes of each class.

An `AlarmPolicy` turns scores into alarms (Merlion's `AggregateAlarms` idea): a second is "above" when its score
exceeds the threshold; an alarm is on once k of the last n seconds were above, or at once where a bedside rule fires
(it has held for its duration already: the monitor's alarm delay); alarms starting less than `refractory_s` after
the previous one ended are merged into it (the monitor does not re-alarm). Each episode then takes the class of most
of its seconds (`class_alarms`): one alarm is never split in two.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from biostream.core.params import AlarmPolicy  # noqa: F401 (params.yaml: its section)
from biostream.data.labels import Runs, fill_runs, find_runs, segment_starts
from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL


def _rolling_count(flags: np.ndarray, breaks: np.ndarray, n: int) -> np.ndarray:
    """Number of True among the last n rows (this one included), not crossing a segment start."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    idx = np.arange(len(flags))
    seg_start = np.maximum.accumulate(np.where(breaks, idx, 0))
    lo = np.maximum(idx - n + 1, seg_start)
    return c[idx + 1] - c[lo]


def apply_policy(
    patient_id: np.ndarray, time_s: np.ndarray, scores: np.ndarray, threshold: float, policy: AlarmPolicy,
    breaks: np.ndarray | None = None, immediate: np.ndarray | None = None,
) -> np.ndarray:
    """Per-second alarm state (int8) after the k-of-n rule and refractory merging. `breaks`: the rows'
    `segment_starts`, when the caller has them (a study scores the same rows at many thresholds). `immediate`:
    seconds that are on at once, without the k-of-n delay (a bedside rule that fires has already held for its
    duration, the monitor's own alarm delay)."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    above = np.asarray(scores) > threshold
    on = _rolling_count(above, breaks, policy.n) >= policy.k
    if immediate is not None:
        on |= np.asarray(immediate, dtype=bool)
    runs = find_runs(on, breaks)
    if len(runs.start) > 1 and policy.refractory_s > 0:
        t = np.asarray(time_s)
        seg = np.cumsum(breaks)
        gap = t[runs.start[1:]] - t[runs.stop[:-1] - 1]
        merge = (gap <= policy.refractory_s) & (seg[runs.start[1:]] == seg[runs.stop[:-1] - 1])
        keep_start = np.concatenate([[True], ~merge])
        keep_stop = np.concatenate([~merge, [True]])
        runs = Runs(runs.start[keep_start], runs.stop[keep_stop])
    return fill_runs(len(on), runs)


def alarm_episodes(patient_id: np.ndarray, time_s: np.ndarray, alarm: np.ndarray,
                   breaks: np.ndarray | None = None) -> pd.DataFrame:
    """Alarm episodes: patient_id, start_s, end_s (exclusive). `breaks` as for `apply_policy`."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    runs = find_runs(np.asarray(alarm, dtype=bool), breaks)
    t = np.asarray(time_s)
    return pd.DataFrame({
        "patient_id": np.asarray(patient_id)[runs.start],
        "start_s": t[runs.start],
        "end_s": t[runs.stop - 1] + 1,
    })


CLASSES = (PHYSIOLOGICAL, TECHNICAL)


def class_alarms(patient_id: np.ndarray, time_s: np.ndarray, outputs: Any, threshold: float, policy: AlarmPolicy,
                 breaks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-second alarm state of each class (int8): one alarm stream after the policy (k of n seconds above
    threshold, or at once where a bedside rule fires (`outputs.rules`), refractory merge), each of its episodes of
    one class: technical when most of its seconds above
    threshold are (`outputs.technical`), physiological otherwise (a patient event within an artefact keeps the
    alarm physiological). An alarm never splits into two because its seconds change class."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    above = np.asarray(outputs.score) > threshold
    rules = getattr(outputs, "rules", None)
    alarm = apply_policy(patient_id, time_s, above.astype(np.float64), 0.5, policy, breaks,
                         None if rules is None else np.asarray(rules) > threshold)
    runs = find_runs(alarm.astype(bool), breaks)
    episode = fill_runs(len(alarm), runs, np.arange(len(runs.start)), fill=-1)
    inside = (episode >= 0) & above
    technical = np.asarray(outputs.technical, dtype=bool)
    counts = np.bincount(episode[inside], minlength=len(runs.start))
    tech_counts = np.bincount(episode[inside & technical], minlength=len(runs.start))
    episode_technical = np.r_[tech_counts > counts / 2, False]  # index -1: no episode
    tech = (alarm > 0) & episode_technical[episode]
    return {PHYSIOLOGICAL: ((alarm > 0) & ~tech).astype(np.int8), TECHNICAL: tech.astype(np.int8)}
