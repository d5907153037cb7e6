"""The labelling function on tiny hand-made recordings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import AlarmRule
from biostream.data.labels import episodes_from_alarms, find_runs, label_recordings, run_reduce

HYPO = AlarmRule("hypotension", "map", "<", 65, 60, "test")
TACHY = AlarmRule("tachycardia", "hr", ">", 140, 10, "test")


def recording(map_values, hr_values=None, patient="p"):
    n = len(map_values)
    return pd.DataFrame({
        "patient_id": patient,
        "time_s": np.arange(n, dtype=np.int32),
        "map": np.asarray(map_values, dtype=np.float32),
        "hr": np.asarray(hr_values if hr_values is not None else np.full(n, 80.0), dtype=np.float32),
    })


def test_find_runs_respects_breaks():
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    breaks = np.zeros(8, dtype=bool)
    breaks[4] = True
    runs = find_runs(mask, breaks)
    assert runs.start.tolist() == [0, 3, 4, 7]
    assert runs.stop.tolist() == [2, 4, 6, 8]
    assert run_reduce(np.arange(8.0), runs, np.maximum).tolist() == [1.0, 3.0, 5.0, 7.0]


def test_alarm_needs_min_duration_and_nan_breaks_the_run():
    m = np.full(300, 80.0)
    m[10:69] = 60  # 59 s: too short
    m[100:200] = 55  # 100 s: an alarm
    m[220:250] = 50
    m[250] = np.nan
    m[251:290] = 50  # 30 s + 39 s around a missing second: two short runs, no alarm
    lab = label_recordings(recording(m), [HYPO], horizon_s=30)
    alarm = lab.columns["alarm_hypotension"]
    assert alarm[100:200].all() and alarm.sum() == 100
    assert lab.alarm_events[["start_s", "end_s", "kind"]].values.tolist() == [[100, 200, "hypotension"]]
    assert lab.alarm_events["extreme"].tolist() == [55.0]
    assert (lab.columns["alarm"] == alarm).all()


def test_early_warning_marks_the_horizon_before_each_start_within_the_patient():
    m = np.full(400, 80.0)
    m[20:100] = 50  # starts 20 s after the patient's start: only 20 s of warning possible
    m[300:380] = 50
    lab = label_recordings(recording(m), [HYPO], horizon_s=60)
    ew = lab.columns["ew_hypotension"]
    assert ew[:20].all() and not ew[20:240].any()
    assert ew[240:300].all() and not ew[300:].any()
    assert (lab.columns["ew_any"] == ew).all()


def test_patients_break_runs_and_warnings():
    a = recording(np.r_[np.full(100, 80.0), np.full(50, 50.0)], patient="a")
    b = recording(np.r_[np.full(30, 50.0), np.full(200, 80.0)], patient="b")
    b_late = recording(np.r_[np.full(100, 80.0), np.full(100, 50.0)], patient="c")
    lab = label_recordings(pd.concat([a, b, b_late], ignore_index=True), [HYPO], horizon_s=120)
    # a's 50 s and b's 30 s are adjacent rows but different patients: neither reaches 60 s
    assert lab.alarm_events["patient_id"].tolist() == ["c"]
    ew = lab.columns["ew_hypotension"]
    assert not ew[:380].any(), "the warning for c's event must not spill into patients a and b"
    assert ew[380:480].all()


def test_episodes_merge_overlapping_kinds():
    m = np.full(300, 80.0)
    hr = np.full(300, 80.0)
    m[50:150] = 55
    hr[120:180] = 150
    df = recording(m, hr)
    lab = label_recordings(df, [HYPO, TACHY], horizon_s=30)
    events, cols = episodes_from_alarms(df, lab, [HYPO, TACHY])
    assert events[["start_s", "end_s", "kind", "signals"]].values.tolist() == [
        [50, 180, "hypotension+tachycardia", "map,hr"]]
    assert cols["label"].sum() == 130
    assert set(cols["event_id"][50:180]) == {0} and (cols["event_id"][:50] == -1).all()


def test_missing_signal_column_is_named():
    with pytest.raises(KeyError, match="reads signal 'map'"):
        label_recordings(recording([80.0]).drop(columns="map"), [HYPO], 30)
