"""Data tests of the synthetic cohort: schema, ranges, splits, labels, determinism, physiology."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import merge_profile
from biostream.data.dataset import read_dataset, summarize, write_dataset
from biostream.data.schema import EVENTS_SCHEMA, NO_EVENT, NO_KIND, SPLITS, vitals_schema
from biostream.sources.synthetic import CohortParams, generate_cohort
from tests.conftest import make_dataset


def test_schema_and_types(small_dataset, configs):
    schema = vitals_schema(configs.signals.keys, [r.kind for r in configs.rules])
    assert list(small_dataset.vitals.columns) == schema.names
    assert list(small_dataset.events.columns) == EVENTS_SCHEMA.names
    for s in configs.signals.keys:
        assert small_dataset.vitals[s].dtype == np.float32


def test_values_within_physiological_ranges(small_dataset, configs):
    v = small_dataset.vitals
    for spec in configs.signals.signals:
        x = v[spec.key].dropna()
        assert len(x) > 0.5 * len(v) or spec.key in ("temp", "etco2"), f"{spec.key} mostly missing"
        assert x.between(*spec.valid).all(), f"{spec.key} outside {spec.valid}"
        assert np.isfinite(x).all()
    assert (v["sbp"].dropna() >= 0).all()
    ok = v[["sbp", "dbp"]].dropna()
    assert (ok["sbp"] > ok["dbp"]).mean() > 0.97  # line flush artefacts make them equal for seconds


def test_no_patient_in_two_splits_and_every_split_used(small_dataset):
    per_patient = small_dataset.vitals.groupby("patient_id")["split"].nunique()
    assert (per_patient == 1).all()
    assert set(small_dataset.patients["split"]) == set(SPLITS)
    merged = small_dataset.vitals.groupby("patient_id")["split"].first()
    assert (merged == small_dataset.patients.set_index("patient_id")["split"]).all()


def test_regular_grid_per_patient(small_dataset):
    for _, rec in small_dataset.vitals.groupby("patient_id"):
        t = rec["time_s"].to_numpy()
        assert t[0] == 0 and (np.diff(t) == 1).all()


def test_labels_agree_with_events_table(small_dataset):
    v, events = small_dataset.vitals, small_dataset.events
    assert len(events) > 0
    expected_class = np.full(len(v), "", dtype=object)
    expected_id = np.full(len(v), NO_EVENT)
    expected_kind = np.full(len(v), NO_KIND, dtype=object)
    index = {pid: rec.index for pid, rec in v.groupby("patient_id")}
    for ev in events.itertuples():  # in id order: a later event wins an overlap, as in truth_columns
        rows = index[ev.patient_id][ev.start_s : ev.end_s]
        assert len(rows) == ev.end_s - ev.start_s, "event extends past the recording"
        expected_class[rows] = ev.event_class
        expected_id[rows] = ev.event_id
        expected_kind[rows] = ev.kind
    assert (v["label"].to_numpy() == (expected_class == "physiological")).all()
    assert (v["artefact"].to_numpy() == (expected_class == "technical")).all()
    assert (v["event_id"].to_numpy() == expected_id).all()
    assert (v["anomaly_kind"].to_numpy() == expected_kind).all()
    assert set(events["category"]) <= {"clinical", "statistical", "artefact", "clinical_alarm"}
    assert set(events["event_class"]) == {"physiological", "technical"}
    assert events["event_id"].tolist() == list(range(len(events)))
    # the class follows the kind: the clinical kinds and shifts and drifts are the patient, the rest the measurement
    technical = {"spike", "flatline", "variance_burst", "probe_off", "line_flush", "ecg_artefact"}
    assert (events["event_class"] == np.where(events["kind"].isin(technical), "technical", "physiological")).all()


def test_rule_episodes_outside_injected_events_are_events(small_dataset, configs):
    """Every rule event (a limit held for its duration) is inside a physiological event, or overlaps a technical
    one (the artefact's doing): no hypotension a monitor alarms on is left out of the ground truth."""
    events, alarms = small_dataset.events, small_dataset.alarm_events
    assert (events["category"] == "clinical_alarm").any()
    for a in alarms.itertuples():
        mine = events[events["patient_id"] == a.patient_id]
        overlap = mine[(mine["start_s"] < a.end_s) & (mine["end_s"] > a.start_s)]
        assert len(overlap), f"rule event {a} is in no event"
        physio = overlap[overlap["event_class"] == "physiological"]
        covered = ((physio["start_s"] <= a.start_s) & (physio["end_s"] >= a.end_s)).any()
        assert covered or (overlap["event_class"] == "technical").any(), a


def test_alarm_labels_agree_with_alarm_events(small_dataset, configs):
    v, alarms = small_dataset.vitals, small_dataset.alarm_events
    for rule in configs.rules:
        col = f"alarm_{rule.kind}"
        expected = np.zeros(len(v), dtype=np.int8)
        index = {pid: rec.index for pid, rec in v.groupby("patient_id")}
        for ev in alarms[alarms["kind"] == rule.kind].itertuples():
            rows = index[ev.patient_id][ev.start_s : ev.end_s]
            values = v.loc[rows, rule.signal]
            assert (values < rule.threshold).all() if rule.op == "<" else (values > rule.threshold).all()
            assert ev.end_s - ev.start_s >= rule.min_duration_s
            expected[rows] = 1
        assert (v[col].to_numpy() == expected).all(), col
    alarm_cols = [f"alarm_{r.kind}" for r in configs.rules]
    assert (v["alarm"] == v[alarm_cols].max(axis=1)).all()


def test_every_required_anomaly_kind_is_generated(configs, physiology, small_params):
    params = merge_profile(small_params, {"generate": {"n_patients": 30, "anomalies_per_hour": 3.0,
                                                       "artefacts_per_hour": 1.5}})
    cohort = generate_cohort(CohortParams.from_params(params), physiology, configs.signals)
    kinds = set(cohort.events["kind"])
    assert kinds >= {"spike", "level_shift", "drift", "flatline", "variance_burst", "hypotension",
                     "tachycardia", "bradycardia", "desaturation", "hypercapnia", "hyperthermia",
                     "probe_off", "line_flush", "ecg_artefact"}
    assert set(cohort.events.loc[cohort.events["category"] == "artefact", "kind"]) == {"probe_off", "line_flush",
                                                                                      "ecg_artefact"}


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, small_params, configs, physiology):
    a, b = tmp_path / "a", tmp_path / "b"
    write_dataset(make_dataset(small_params, configs, physiology), a, configs)
    write_dataset(make_dataset(small_params, configs, physiology), b, configs)
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    other = merge_profile(small_params, {"generate": {"seed": 1}})
    c = make_dataset(other, configs, physiology)
    assert not c.vitals["hr"].equals(read_dataset(a).vitals["hr"])


def test_patient_does_not_depend_on_cohort_size(small_params, configs, physiology):
    few = generate_cohort(CohortParams.from_params(merge_profile(small_params, {"generate": {"n_patients": 2}})),
                          physiology, configs.signals)
    many = generate_cohort(CohortParams.from_params(small_params), physiology, configs.signals)
    first = many.vitals[many.vitals["patient_id"] == "S0001"].reset_index(drop=True)
    pd.testing.assert_frame_equal(few.vitals[few.vitals["patient_id"] == "S0001"].reset_index(drop=True), first)


def clinical_windows(ds, kind):
    """(injected event, its seconds, the patient's quiet seconds: no event, no artefact, no alarm)"""
    v = ds.vitals.set_index(["patient_id", "time_s"])
    for ev in ds.events[(ds.events["kind"] == kind) & (ds.events["category"] == "clinical")].itertuples():
        rec = v.loc[ev.patient_id]
        quiet = rec[(rec["label"] == 0) & (rec["artefact"] == 0) & (rec["alarm"] == 0)]
        yield ev, rec.loc[ev.start_s : ev.end_s - 1], quiet


@pytest.fixture(scope="module")
def rich_dataset(small_params, configs, physiology):
    params = merge_profile(small_params, {"generate": {"n_patients": 24, "anomalies_per_hour": 3.0,
                                                       "nibp_fraction": 0.0}})
    return make_dataset(params, configs, physiology)


def test_hypotension_is_coupled_and_alarms(rich_dataset):
    checked = 0
    for _, during, before in clinical_windows(rich_dataset, "hypotension"):
        if before["map"].notna().sum() < 120:
            continue
        checked += 1
        assert during["map"].min() < 65
        assert during["sbp"].median() < before["sbp"].median() - 10, "SBP falls with MAP"
        assert during["hr"].max() > before["hr"].median() + 3, "the baroreflex raises HR"
        assert during["alarm_hypotension"].any()
    assert checked >= 3


def test_hypercapnia_moves_rr_and_etco2(rich_dataset):
    checked = 0
    for _, during, before in clinical_windows(rich_dataset, "hypercapnia"):
        if before["etco2"].notna().sum() < 120:
            continue
        checked += 1
        assert during["etco2"].max() > 50 and during["rr"].median() < before["rr"].median()
    assert checked >= 1


def test_nibp_patients_hold_values_between_cuff_cycles(small_params, configs, physiology):
    params = merge_profile(small_params, {"generate": {"n_patients": 4, "nibp_fraction": 1.0}})
    ds = make_dataset(params, configs, physiology)
    assert set(ds.patients["bp_mode"]) == {"nibp"}
    for _, rec in ds.vitals.groupby("patient_id"):
        sbp = rec["sbp"].dropna().to_numpy()
        changes = np.count_nonzero(np.diff(sbp))
        assert changes < len(sbp) / 100, "cuff readings are held for minutes"
        assert changes > 5


def test_manifest_numbers(small_dataset, configs):
    m = summarize(small_dataset, configs)
    assert m["patients"] == len(small_dataset.patients)
    assert m["rows"] == len(small_dataset.vitals)
    assert m["hours"] == pytest.approx(len(small_dataset.vitals) / 3600, abs=1e-3)
    assert m["events"] == len(small_dataset.events)
    assert sum(m["patients_per_split"].values()) == m["patients"]
    assert m["alarms_per_hour"] == pytest.approx(len(small_dataset.alarm_events) / m["hours"], rel=1e-3)
    assert 0 < m["label_fraction"] < 0.5
    assert m["events_by_class"]["physiological"] + m["events_by_class"]["technical"] == m["events"]


def test_bedside_failures_are_in_the_cohort(configs, physiology, small_params):
    """What makes bedside monitors noisy and what the project missed before (issue #18): NIBP patients with MAP
    hovering near 65 and recurrent rule-defined hypotension, tachycardia of 120-140 for minutes, short crossings
    that end before the rules' durations (unlabelled), and artefacts that trip the rules (technical events)."""
    params = merge_profile(small_params, {"generate": {"n_patients": 24, "nibp_fraction": 1.0,
                                                       "anomalies_per_hour": 3.0, "artefacts_per_hour": 1.0}})
    ds = make_dataset(params, configs, physiology)
    v, events, alarms = ds.vitals, ds.events, ds.alarm_events
    hypo = alarms[alarms["kind"] == "hypotension"]
    assert len(hypo) >= 5 and (hypo.groupby("patient_id").size() >= 2).any(), "recurrent hypotension"
    assert (events["category"] == "clinical_alarm").any(), "rule events nobody injected"
    tachy = events[events["kind"] == "tachycardia"]
    typical = [v[(v["patient_id"] == e.patient_id) & v["time_s"].between(e.start_s, e.end_s - 1)]["hr"].median()
               for e in tachy.itertuples()]
    assert len(typical) >= 2 and min(typical) < 140, "tachycardia under the old 140 limit is in the cohort"
    # short crossings: seconds beyond a limit that no rule event covers
    hr_over = (v["hr"] > 120) & (v["alarm_tachycardia"] == 0) & (v["label"] == 0) & (v["artefact"] == 0)
    assert hr_over.sum() > 0
    technical = events[events["event_class"] == "technical"]
    tripped = [a for a in alarms.itertuples() if ((technical["patient_id"] == a.patient_id) & (technical["start_s"]
                                                  < a.end_s) & (technical["end_s"] > a.start_s)).any()]
    assert tripped, "artefacts that trip a rule"
