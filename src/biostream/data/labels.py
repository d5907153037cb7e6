"""Clinical-alarm labels: one function for every recording, synthetic or real.

`label_recordings` turns per-second vital signs into
* per-second alarm labels, one column per rule plus `alarm` (any rule),
* alarm events (a run of seconds beyond a rule's limit lasting at least its minimum duration),
* early-warning labels: `ew_<kind>` is 1 at second t when an alarm event of that kind starts in
  (t, t + horizon]; `ew_any` for any kind.

Everything is vectorised over the whole table; patients and gaps in time break runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biostream.core.config import AlarmRule
from biostream.data.schema import ALARM_EVENTS_SCHEMA, PHYSIOLOGICAL, alarm_column, empty_frame, ew_column


@dataclass(frozen=True)
class Runs:
    """Runs of consecutive True values: `start` (first index) and `stop` (index after the last)."""

    start: np.ndarray
    stop: np.ndarray

    @property
    def length(self) -> np.ndarray:
        return self.stop - self.start


def segment_starts(patient_id: np.ndarray, time_s: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that start a contiguous segment (new patient or a jump in time)."""
    n = len(patient_id)
    starts = np.ones(n, dtype=bool)
    if n > 1:
        same_patient = patient_id[1:] == patient_id[:-1]
        steps = np.diff(time_s)
        step = np.median(steps[same_patient]) if same_patient.any() else 1
        starts[1:] = ~same_patient | (steps != step)
    return starts


def find_runs(mask: np.ndarray, breaks: np.ndarray | None = None) -> Runs:
    """Runs of True in `mask`; a True in `breaks` starts a new run even if the previous row was True."""
    mask = np.asarray(mask, dtype=bool)
    prev = np.concatenate(([False], mask[:-1]))
    if breaks is not None:
        prev &= ~breaks
    nxt_breaks = np.concatenate((breaks[1:], [True])) if breaks is not None else None
    nxt = np.concatenate((mask[1:], [False]))
    if nxt_breaks is not None:
        nxt &= ~nxt_breaks
    start = np.flatnonzero(mask & ~prev)
    stop = np.flatnonzero(mask & ~nxt) + 1
    return Runs(start, stop)


def fill_runs(n: int, runs: Runs, values: np.ndarray | None = None, fill: int = 0) -> np.ndarray:
    """An array of length n with `values[i]` (default 1) on run i and `fill` elsewhere."""
    if values is None:
        out = np.zeros(n + 1, dtype=np.int32)
        np.add.at(out, runs.start, 1)
        np.add.at(out, runs.stop, -1)
        return (np.cumsum(out[:-1]) > 0).astype(np.int8)
    # runs do not overlap: paint them via a cumulative index
    idx = np.zeros(n + 1, dtype=np.int64)
    np.add.at(idx, runs.start, np.arange(1, len(runs.start) + 1))
    np.add.at(idx, runs.stop, -np.arange(1, len(runs.start) + 1))
    which = np.cumsum(idx[:-1])
    out = np.full(n, fill, dtype=np.asarray(values).dtype if len(values) else np.int64)
    inside = which > 0
    out[inside] = np.asarray(values)[which[inside] - 1]
    return out


def run_reduce(values: np.ndarray, runs: Runs, ufunc: np.ufunc) -> np.ndarray:
    """`ufunc.reduce(values[start:stop])` for every run, in one vectorised call."""
    if not len(runs.start):
        return np.empty(0, dtype=values.dtype)
    padded = np.append(values, values[-1:])  # a stop may equal len(values)
    bounds = np.column_stack([runs.start, runs.stop]).ravel()
    return ufunc.reduceat(padded, bounds)[::2]


def _condition(values: np.ndarray, rule: AlarmRule) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        if rule.op == ">":
            return values > rule.threshold
        if rule.op == "<":
            return values < rule.threshold
        if rule.op == ">=":
            return values >= rule.threshold
        return values <= rule.threshold


@dataclass(frozen=True)
class AlarmLabels:
    columns: dict[str, np.ndarray]  # alarm, alarm_<kind>, ew_any, ew_<kind> (int8)
    alarm_events: pd.DataFrame  # ALARM_EVENTS_SCHEMA


def label_recordings(
    df: pd.DataFrame, rules: Sequence[AlarmRule], horizon_s: int, interval_s: float | None = None
) -> AlarmLabels:
    """Label per-second vital signs with the clinical alarm rules.

    `df` holds `patient_id`, `time_s` and one column per signal a rule reads, sorted by patient and
    time on a regular grid (`interval_s`, inferred when None). Missing values (NaN) never satisfy a rule.
    """
    n = len(df)
    pid = df["patient_id"].to_numpy()
    time_s = df["time_s"].to_numpy()
    breaks = segment_starts(pid, time_s)
    if interval_s is None:
        interval_s = float(np.median(np.diff(time_s)[~breaks[1:]])) if n > 1 and (~breaks[1:]).any() else 1.0
    horizon = max(1, int(round(horizon_s / interval_s)))
    seg_id = np.cumsum(breaks) - 1
    seg_first = np.flatnonzero(breaks)

    alarm_cols: dict[str, np.ndarray] = {}
    ew_cols: dict[str, np.ndarray] = {}
    any_alarm = np.zeros(n, dtype=np.int8)
    any_ew = np.zeros(n, dtype=np.int8)
    events = []
    for rule in rules:
        if rule.signal not in df.columns:
            raise KeyError(f"alarm rule '{rule.kind}' reads signal '{rule.signal}', which the table lacks")
        values = df[rule.signal].to_numpy(dtype=np.float64)
        runs = find_runs(_condition(values, rule), breaks)
        keep = runs.length * interval_s >= rule.min_duration_s
        runs = Runs(runs.start[keep], runs.stop[keep])
        alarm = fill_runs(n, runs)
        alarm_cols[alarm_column(rule.kind)] = alarm
        any_alarm |= alarm

        # early warning: the `horizon` rows before each event start, within the same segment
        ew_start = np.maximum(runs.start - horizon, seg_first[seg_id[runs.start]])
        ew = fill_runs(n, Runs(ew_start, runs.start)) if len(runs.start) else np.zeros(n, dtype=np.int8)
        ew_cols[ew_column(rule.kind)] = ew
        any_ew |= ew

        if len(runs.start):
            extreme = run_reduce(values, runs, np.minimum if rule.op in ("<", "<=") else np.maximum)
            events.append(
                pd.DataFrame(
                    {
                        "patient_id": pid[runs.start],
                        "start_s": time_s[runs.start].astype(np.int32),
                        "end_s": (time_s[runs.stop - 1] + interval_s).astype(np.int32),
                        "kind": rule.kind,
                        "signal": rule.signal,
                        "extreme": extreme.astype(np.float32),
                    }
                )
            )
    columns = {"alarm": any_alarm, **alarm_cols, "ew_any": any_ew, **ew_cols}
    if events:
        alarm_events = pd.concat(events, ignore_index=True).sort_values(
            ["patient_id", "start_s", "kind"], kind="stable", ignore_index=True
        )
        alarm_events.insert(0, "alarm_event_id", np.arange(len(alarm_events), dtype=np.int32))
    else:
        alarm_events = empty_frame(ALARM_EVENTS_SCHEMA)
    return AlarmLabels(columns=columns, alarm_events=alarm_events)


def rule_episodes(
    df: pd.DataFrame, labels: AlarmLabels, rules: Sequence[AlarmRule], interval_s: float = 1.0
) -> pd.DataFrame:
    """The rule-defined events of recordings: merged clinical-alarm episodes (EVENTS_SCHEMA, physiological).

    Overlapping or touching alarm events of any kind form one episode (kind: the rule kinds joined by
    '+', in rule order). For recordings without annotation they are the whole ground truth; for the synthetic
    cohort, those outside its injected events are added to them (`biostream.data.truth`).
    """
    pid = df["patient_id"].to_numpy()
    time_s = df["time_s"].to_numpy()
    runs = find_runs(labels.columns["alarm"].astype(bool), segment_starts(pid, time_s))
    kinds = []
    signals = []
    for a, b in zip(runs.start, runs.stop, strict=True):
        active = [r for r in rules if labels.columns[alarm_column(r.kind)][a:b].any()]
        kinds.append("+".join(r.kind for r in active))
        signals.append(",".join(dict.fromkeys(r.signal for r in active)))
    return pd.DataFrame(
        {
            "event_id": np.arange(len(runs.start), dtype=np.int32),
            "patient_id": pid[runs.start],
            "start_s": time_s[runs.start].astype(np.int32),
            "end_s": (time_s[runs.stop - 1] + interval_s).astype(np.int32),
            "kind": pd.Series(kinds, dtype=object),
            "category": "clinical_alarm",
            "event_class": PHYSIOLOGICAL,
            "signals": pd.Series(signals, dtype=object),
        }
    )
