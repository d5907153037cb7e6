"""The labelling function on tiny hand-made recordings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import AlarmRule
from biostream.data.labels import find_runs, label_recordings, rule_episodes, run_reduce
from biostream.data.truth import truth_columns, with_rule_episodes

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
    events = rule_episodes(df, lab, [HYPO, TACHY])
    assert events[["start_s", "end_s", "kind", "signals", "event_class"]].values.tolist() == [
        [50, 180, "hypotension+tachycardia", "map,hr", "physiological"]]
    cols = truth_columns(df["patient_id"].to_numpy(), df["time_s"].to_numpy(), events)
    assert cols["label"].sum() == 130 and cols["artefact"].sum() == 0
    assert set(cols["event_id"][50:180]) == {0} and (cols["event_id"][:50] == -1).all()


def _event(pid, start, end, kind, cls, event_id=0):
    return {"event_id": event_id, "patient_id": pid, "start_s": start, "end_s": end, "kind": kind,
            "category": "clinical" if cls == "physiological" else "artefact", "event_class": cls, "signals": "map"}


def test_rule_episodes_complete_the_injected_events():
    """A rule episode outside injected events is an event; one overlapping a physiological event extends it (an
    artefact inside it too changes nothing); one overlapping only a technical event is the artefact's doing and is
    not an event."""
    injected = pd.DataFrame([_event("p", 100, 200, "hypotension", "physiological", 0),
                             _event("p", 240, 243, "spike", "technical", 1),
                             _event("p", 500, 530, "probe_off", "technical", 2)])
    rules = pd.DataFrame([_event("p", 150, 260, "hypotension", "physiological"),  # extends event 0 to 260
                          _event("p", 510, 540, "desaturation", "physiological"),  # the probe off's doing
                          _event("p", 900, 1000, "hypotension", "physiological"),  # a new event
                          _event("q", 10, 80, "tachycardia", "physiological")])
    for r in rules.itertuples():
        rules.loc[r.Index, "category"] = "clinical_alarm"
    events = with_rule_episodes(injected, rules)
    assert events[["patient_id", "start_s", "end_s", "kind", "category", "event_class"]].values.tolist() == [
        ["p", 100, 260, "hypotension", "clinical", "physiological"],
        ["p", 240, 243, "spike", "artefact", "technical"],
        ["p", 500, 530, "probe_off", "artefact", "technical"],
        ["p", 900, 1000, "hypotension", "clinical_alarm", "physiological"],
        ["q", 10, 80, "tachycardia", "clinical_alarm", "physiological"]]
    assert events["event_id"].tolist() == [0, 1, 2, 3, 4]
    pid = np.r_[np.full(1100, "p"), np.full(100, "q")]
    t = np.r_[np.arange(1100), np.arange(100)]
    cols = truth_columns(pid, t, events)
    assert cols["label"][100:240].all() and cols["label"][243:260].all() and cols["label"][900:1000].all()
    assert not cols["label"][260:500].any() and cols["label"].sum() == 157 + 100 + 70
    assert cols["artefact"][500:530].all() and cols["artefact"][240:243].all() and cols["artefact"].sum() == 33
    assert (cols["anomaly_kind"][1110:1180] == "tachycardia").all() and cols["event_id"][1110] == 4


def test_missing_signal_column_is_named():
    with pytest.raises(KeyError, match="reads signal 'map'"):
        label_recordings(recording([80.0]).drop(columns="map"), [HYPO], 30)
