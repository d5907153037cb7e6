"""Data tests of the synthetic cohort: schema, ranges, splits, labels, determinism, physiology."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from biostream.core.config import ConfigError, load_yaml, merge_profile
from biostream.core.params import validate
from biostream.data.dataset import read_dataset, summarize, write_dataset
from biostream.data.schema import EVENTS_SCHEMA, NO_EVENT, NO_KIND, SPLITS, vitals_schema
from biostream.sources.synthetic import (
    ICU,
    OPERATING_ROOM,
    Physiology,
    generate_cohort,
    ou_process,
)
from biostream.sources.synthetic.params import BP_SIGNALS, MAIN_SIGNAL
from biostream.sources.synthetic.patient import _draw_patient, _latent_physiology
from tests.conftest import ROOT, make_dataset


def test_schema_and_types(small_dataset, configs):
    schema = vitals_schema(configs.signals.keys, [r.kind for r in configs.rules])
    assert list(small_dataset.vitals.columns) == schema.names
    assert list(small_dataset.events.columns) == EVENTS_SCHEMA.names
    for s in configs.signals.keys:
        assert small_dataset.vitals[s].dtype == np.float32


def test_values_within_physiological_ranges(small_dataset, configs):
    v = small_dataset.vitals
    icu = v["patient_id"].isin(small_dataset.patients.loc[small_dataset.patients["bp_mode"] == "none", "patient_id"])
    for spec in configs.signals.signals:
        x = v[spec.key].dropna()
        shown = v.loc[~icu, spec.key] if spec.key in BP_SIGNALS else v[spec.key]  # ICU patients have no BP at all
        assert shown.notna().mean() > 0.5 or spec.key in ("temp", "etco2"), f"{spec.key} mostly missing"
        assert x.between(*spec.valid).all(), f"{spec.key} outside {spec.valid}"
        assert np.isfinite(x).all()
        # numerics as monitors report them: whole numbers for HR, SpO2, pressures, RR, EtCO2; 0.1 degC
        assert (np.round(x, spec.decimals) == x).all(), f"{spec.key} not rounded to {spec.decimals} decimals"
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
    cohort = generate_cohort(validate(params).generate, physiology, configs.signals)
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
    few = generate_cohort(validate(merge_profile(small_params, {"generate": {"n_patients": 2}})).generate,
                          physiology, configs.signals)
    many = generate_cohort(validate(small_params).generate, physiology, configs.signals)
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
                                                       "icu_fraction": 0.0, "nibp_fraction": 0.0}})
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
    params = merge_profile(small_params, {"generate": {"n_patients": 4, "icu_fraction": 0.0, "nibp_fraction": 1.0}})
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
    params = merge_profile(small_params, {"generate": {"n_patients": 24, "icu_fraction": 0.0, "nibp_fraction": 1.0,
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


# --------------------------------------------------------------------------------------------------
# Monitoring settings: operating-room and ICU patients (configs/synthetic.yaml: settings, impedance_rr)
# --------------------------------------------------------------------------------------------------


def settings_cohort(small_params, physiology, configs, **generate):
    return generate_cohort(validate(merge_profile(small_params, {"generate": generate})).generate, physiology,
                           configs.signals)


@pytest.fixture(scope="module")
def icu_cohort(small_params, configs, physiology):
    """Only ICU patients, many events and artefacts, no unlabelled gaps (every missing RR value is the impedance's)."""
    return settings_cohort(small_params, physiology, configs, n_patients=16, icu_fraction=1.0,
                           anomalies_per_hour=3.0, artefacts_per_hour=1.5, gaps_per_hour=0.0)


def test_settings_follow_icu_fraction(small_params, configs, physiology):
    counts = {}
    for fraction in (0.0, 0.35, 1.0):
        cohort = settings_cohort(small_params, physiology, configs, n_patients=40, hours=[0.1, 0.12], warmup_s=60,
                                 icu_fraction=fraction)
        pt = cohort.patients
        counts[fraction] = int((pt["setting"] == ICU).sum())
        assert set(pt["setting"]) <= {ICU, OPERATING_ROOM}
        # the written patients table has no setting column: there bp_mode "none" marks an ICU patient
        assert ((pt["bp_mode"] == "none") == (pt["setting"] == ICU)).all()
    assert counts[0.0] == 0 and counts[1.0] == 40
    assert 6 <= counts[0.35] <= 22  # Binomial(40, 0.35): mean 14, sd 3


def test_icu_patients_show_hr_spo2_and_rr_only(icu_cohort, physiology, configs):
    pt, v = icu_cohort.patients, icu_cohort.vitals
    assert set(pt["setting"]) == {ICU} and set(pt["bp_mode"]) == {"none"}
    unmonitored = [s for s in configs.signals.keys if s not in physiology.icu_monitored]
    assert set(unmonitored) >= {"sbp", "dbp", "map", "temp", "etco2"}
    assert v[unmonitored].isna().all().all(), "no blood pressure, EtCO2 or temperature value at all"
    for s in physiology.icu_monitored:
        assert v[s].notna().mean() > 0.8, s


def test_icu_patients_get_only_events_on_what_they_show(icu_cohort, physiology):
    ev = icu_cohort.events
    shown = set(physiology.icu_monitored)
    clinical = set(ev.loc[ev["category"] == "clinical", "kind"])
    assert clinical == {k for k, s in MAIN_SIGNAL.items() if s in shown} == {"tachycardia", "bradycardia",
                                                                             "desaturation"}
    assert "line_flush" not in set(ev["kind"]), "no arterial line to flush"
    assert {"probe_off", "ecg_artefact"} <= set(ev["kind"])
    assert all(set(sigs.split(",")) <= shown for sigs in ev["signals"]), "an event on a signal nobody monitors"


def test_icu_patients_have_no_induction_or_low_pressure(physiology, configs, small_params):
    """The same draws as an operating-room patient's, without the MAP drop of induction or low-pressure stretches."""
    params = validate(small_params).generate
    n = 3600
    for seed in range(5):
        pt = _draw_patient(np.random.default_rng(seed), physiology, params, configs.signals)
        latent = {}
        for setting in (OPERATING_ROOM, ICU):
            who = type(pt)(setting, pt.base, pt.map0, pt.pp0, pt.bp_mode, pt.present)
            latent[setting] = _latent_physiology(np.random.default_rng(100 + seed), n, physiology, who).map_dev
        induction = latent[OPERATING_ROOM] - latent[ICU]
        assert (induction <= 1e-9).all() and induction[:1500].min() < -3.0, "the operating room's induction"
        # an ICU patient's latent MAP is its slow fluctuation alone (the first draw of the same generator)
        assert np.array_equal(latent[ICU], ou_process(np.random.default_rng(100 + seed), n,
                                                      *physiology.fluctuation["map"]))


def test_baselines_span_the_configured_ranges(physiology, configs, small_params):
    params = validate(merge_profile(small_params, {"generate": {"icu_fraction": 0.5}})).generate
    rng = np.random.default_rng(0)
    drawn = {ICU: [], OPERATING_ROOM: []}
    for _ in range(800):
        pt = _draw_patient(rng, physiology, params, configs.signals)
        drawn[pt.setting].append(pt.base)
    for setting, bases in drawn.items():
        assert len(bases) > 300, setting
        table = pd.DataFrame(bases)
        for key in ("hr", "spo2", "rr"):
            _, _, lo, hi = physiology.baseline[setting][key]
            x = table[key]
            assert x.between(lo, hi).all(), (setting, key)
            assert x.min() < lo + 0.15 * (hi - lo) and x.max() > hi - 0.15 * (hi - lo), (setting, key, x.describe())
    icu, op = pd.DataFrame(drawn[ICU]), pd.DataFrame(drawn[OPERATING_ROOM])
    assert icu["hr"].median() > op["hr"].median() + 8, "ICU patients' heart rates are higher"
    assert icu["rr"].median() > op["rr"].median() + 3, "spontaneous breathing is faster than the ventilator's rate"


def test_baselines_show_in_the_recordings(small_params, configs, physiology):
    """Per-patient medians of HR and RR follow each setting's baselines (the BIDMC fixtures' ICU patients: HR
    median 90, RR 18; the anaesthetised: RR 8-16)."""
    cohort = settings_cohort(small_params, physiology, configs, n_patients=40, hours=[0.2, 0.25], warmup_s=60,
                             icu_fraction=0.5, anomalies_per_hour=0.0, artefacts_per_hour=0.0)
    med = cohort.vitals.groupby("patient_id")[["hr", "rr"]].median().join(cohort.patients.set_index("patient_id"))
    for setting, rows in med.groupby("setting"):
        for key in ("hr", "rr"):
            _, _, lo, hi = physiology.baseline[setting][key]
            assert rows[key].between(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)).mean() >= 0.9, (setting, key)
    by = med.groupby("setting")[["hr", "rr"]].median()
    assert by.loc[ICU, "rr"] > by.loc[OPERATING_ROOM, "rr"] + 3 and by.loc[ICU, "hr"] > by.loc[OPERATING_ROOM, "hr"]


def test_icu_rr_is_an_impedance_rate(icu_cohort, small_params, configs, physiology):
    """Whole numbers held for seconds, missed breaths counting down, and drop-outs (no gaps were asked for, so every
    missing value is the impedance's), as the BIDMC fixtures' RESP; ventilated patients' RR has none of these."""
    v = icu_cohort.vitals
    assert v["hr"].notna().all(), "no unlabelled gaps in this cohort"
    changes, countdowns, patients_with_dropouts = [], 0, 0
    for _, rec in v.groupby("patient_id"):
        rr = rec["rr"].to_numpy()
        ok = rr[np.isfinite(rr)]
        assert (ok == np.round(ok)).all(), "a whole number a minute"
        patients_with_dropouts += bool(np.isnan(rr).any())
        d = np.diff(rr)
        changes.append(np.mean(d[np.isfinite(d)] != 0))
        down = np.concatenate([[0], (d == -1).astype(int), [0]])
        runs = np.flatnonzero(np.diff(down) == -1) - np.flatnonzero(np.diff(down) == 1)
        countdowns += int((runs >= 3).sum())
    assert patients_with_dropouts >= 4, "drop-outs"
    assert countdowns >= 5, "missed breaths"
    assert 0.02 < np.median(changes) < 0.25, "held between refreshes (BIDMC: 8 % of seconds change)"
    ventilated = settings_cohort(small_params, physiology, configs, n_patients=6, icu_fraction=0.0, gaps_per_hour=0.0,
                                 anomalies_per_hour=0.0, artefacts_per_hour=0.0).vitals
    assert ventilated["rr"].notna().all()
    assert (ventilated.groupby("patient_id")["rr"].agg(lambda x: np.mean(np.diff(x.to_numpy()) != 0)) < 0.1).all()


def test_settings_are_deterministic(small_params, configs, physiology):
    a = settings_cohort(small_params, physiology, configs, n_patients=4, icu_fraction=0.5)
    b = settings_cohort(small_params, physiology, configs, n_patients=4, icu_fraction=0.5)
    assert set(a.patients["setting"]) == {ICU, OPERATING_ROOM}
    pd.testing.assert_frame_equal(a.vitals, b.vitals)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    pd.testing.assert_frame_equal(a.events, b.events)


def test_icu_baseline_must_cover_what_icu_patients_show(tmp_path):
    raw = load_yaml(ROOT / "configs/synthetic.yaml")
    del raw["baseline"][ICU]["rr"]
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"baseline\.icu: missing signals \['rr'\]"):
        Physiology.from_yaml(path)
