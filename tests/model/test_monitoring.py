"""Monitoring (biostream.monitoring) on a real sqlite store: patients like the training ones raise no alert; the same
patients with a drifted signal, or a silent one, raise it (a WARNING naming what drifted); the bedside rules' events
are labels for a live recall; a bundle keeps its reference."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from biostream.core.params import DEFAULT_MONITOR
from biostream.models.bundle import ModelBundle
from biostream.models.reference import Reference, psi
from biostream.monitoring.live import Monitor, check, rule_events
from biostream.reporting.case import Limit, limits_of
from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.store import Store, sqlite_url
from tests.model.test_streams import START, params

PERIOD = 1200


@pytest.fixture(scope="module")
def reference(model_data):
    """The reference of the training patients, as the train stage makes it."""
    from types import SimpleNamespace

    from biostream.stages.train import training_reference

    part = SimpleNamespace(rows=model_data.train, vitals=model_data.dataset.vitals)
    return training_reference(part, model_data.pipeline.signals, ["synthetic"])


def stream(scorer, tmp_path, model_data, shift: dict[str, float] | None = None, silent: str | None = None) -> Store:
    """Six evaluation patients' first 1,200 s streamed as six beds; `shift` added to signals, `silent` blanked after
    the first minute (a probe off)."""
    signals = list(scorer.spec.signals)
    vitals = model_data.dataset.vitals
    pids = sorted(model_data.evaluation["patient_id"].unique())[:6]
    store = Store(sqlite_url(tmp_path / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    chunks = []
    for pid in pids:
        x = vitals[vitals["patient_id"] == pid][signals].to_numpy(dtype=np.float64)[:PERIOD].T.copy()
        for s, d in (shift or {}).items():
            x[signals.index(s)] += d
        if silent:
            x[signals.index(silent), 60:] = np.nan
        chunks.append((pid, x))
    for a in range(0, PERIOD, 300):
        engine.ingest([Chunk(f"bed-{pid}", START + a, x[:, a:a + 300].copy()) for pid, x in chunks],
                      now=float(START + a))
    return store


def test_psi_is_zero_for_the_same_shares_and_grows_with_a_shift(reference):
    hr = reference.signals["hr"]
    assert psi(hr.shares, hr.shares) == pytest.approx(0.0, abs=1e-12)
    assert 0 < psi([0.5, 0.5], [0.4, 0.6]) < psi([0.5, 0.5], [0.1, 0.9])
    assert len(hr.shares) == len(hr.edges) + 1 and sum(hr.shares) == pytest.approx(1.0)


def test_undrifted_patients_raise_no_alert_and_a_drifted_signal_does(alarming, model_data, reference, tmp_path,
                                                                     caplog):
    scorer = alarming[0]
    signals, limits = scorer.spec.signals, limits_of(scorer.bundle)
    calm = check(stream(scorer, tmp_path / "calm", model_data), reference, signals, limits, DEFAULT_MONITOR,
                 START + PERIOD, START)
    assert calm["period"]["seconds"] == 6 * PERIOD and calm["period"]["enough_data"]
    assert not [a for a in calm["alerts"] if a["check"].startswith(("drift", "missing"))], calm["alerts"]
    assert all(v["psi"] <= v["psi_limit"] for v in calm["signals"].values() if v["psi"] is not None)
    drifted_store = stream(scorer, tmp_path / "drifted", model_data, shift={"hr": 35.0})
    monitor = Monitor(drifted_store, reference, signals, limits, DEFAULT_MONITOR, {"name": "m", "version": "3"})
    published = []
    monitor.publish = published.append
    with caplog.at_level(logging.WARNING, logger="biostream"):
        state = monitor.run_once(now=START + PERIOD - 1)
    checks = {a["check"] for a in state["alerts"]}
    assert "drift:hr" in checks and state["signals"]["hr"]["psi"] > state["signals"]["hr"]["psi_limit"]
    assert not any(c.startswith("drift:") and c != "drift:hr" for c in checks), checks
    assert any("HR drifted from the training patients" in r.getMessage() for r in caplog.records)
    assert published == [state] and monitor.state() is state
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="biostream"):
        monitor.run_once(now=START + PERIOD - 1)  # an alert still raised is not logged again
    assert not any("HR drifted" in r.getMessage() for r in caplog.records)


def test_a_probe_off_is_a_missingness_alert_and_an_unmonitored_signal_is_none(alarming, model_data, reference,
                                                                               tmp_path):
    scorer = alarming[0]
    state = check(stream(scorer, tmp_path, model_data, silent="spo2"), reference, scorer.spec.signals,
                  limits_of(scorer.bundle), DEFAULT_MONITOR, START + PERIOD, START)
    checks = {a["check"] for a in state["alerts"]}
    assert "missing:spo2" in checks and "drift:spo2" not in checks
    assert state["signals"]["spo2"]["missing"] > 0.9 and state["signals"]["spo2"]["monitoring_beds"] == 6
    # a signal the beds do not monitor at all (no capnograph) is no missing data: no alert, however often absent
    unmonitored = [s for s, v in state["signals"].items() if v["monitoring_beds"] == 0]
    assert not [c for c in checks if c.split(":")[-1] in unmonitored], (unmonitored, checks)


def test_rule_events_are_labels_once_a_minute_has_passed():
    lim = Limit("hypotension", "map", "<", 65.0, 60)
    times = np.arange(1000, 1300)
    values = np.full((300, 1), 80.0)
    values[50:130, 0] = 55.0  # 80 s below 65: an event [1050, 1130)
    values[200:230, 0] = 55.0  # 30 s: too short for the rule
    assert rule_events(times, values, [lim], ["map"], until=1300) == [(1050, 1130)]
    assert rule_events(times, values, [lim], ["map"], until=1150) == []  # ended 20 s ago: not known yet
    gap = np.concatenate([np.arange(1000, 1090), np.arange(1100, 1310)])  # a gap breaks the run
    assert rule_events(gap, values, [lim], ["map"], until=1400) == []


def test_live_recall_counts_the_floors_alarms_on_rule_events(alarming, model_data, reference, tmp_path):
    scorer, pid, values = alarming
    store = Store(sqlite_url(tmp_path / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    for a in range(0, values.shape[1], 100):
        engine.ingest([Chunk(pid, START + a, values[:, a:a + 100].copy())], now=float(START + a))
    state = check(store, reference, scorer.spec.signals, limits_of(scorer.bundle), DEFAULT_MONITOR,
                  START + values.shape[1], START)
    assert state["recall"]["events"] >= 1 and state["recall"]["recall"] == 1.0  # the floor alarms on its rules


def test_a_bundle_keeps_its_reference(alarming, reference, tmp_path):
    from dataclasses import replace

    bundle = replace(alarming[0].bundle, reference=reference)
    bundle.save(tmp_path / "bundle")
    assert ModelBundle.load(tmp_path / "bundle").reference == reference
    assert Reference.from_dict(reference.to_dict()) == reference


def test_the_advisory_rate_is_judged_against_the_real_recordings_rate_where_the_registry_chose_it(
        alarming, configs, reference, tmp_path):
    """A bed whose MAP dips to 70 for a minute every 5 min opens an advisory (MAP < 73) each time: 12 an hour. Against
    the served advisory's rate on the real recordings (0.9 an hour, 3 x is 2.7) that is an alert naming it; with a
    rate of 5 an hour, or no rate known (a bento packaged before it was kept), none."""
    import dataclasses

    from biostream.models.advisor import Advisor
    from biostream.models.candidates import Advisories
    from biostream.serving import Scorer
    from tests.conftest import ROOT

    base, _, values = alarming
    config = Advisories.load(ROOT / "configs/advisories.yaml", configs.rules)
    adv = Advisor.build(config, "map_below_73", configs.rules, configs.signals, base.spec.signals, "a test", "real",
                        episodes_per_hour=0.9)
    scorer = Scorer(base.bundle, dataclasses.replace(base.spec, advisory=adv.to_dict()))
    assert scorer.spec.advisor.episodes_per_hour == 0.9
    n = 1200
    x = np.tile(values[:, :1], (1, n))  # one calm second held: no alarm
    j = list(scorer.spec.signals).index("map")
    x[j] = 80.0
    for a in range(0, n, 300):
        x[j, a + 200:a + 260] = 70.0
    store = Store(sqlite_url(tmp_path / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    for a in range(0, n, 100):
        engine.ingest([Chunk("bed-adv", START + a, x[:, a:a + 100].copy())], now=float(START + a))
    limits = limits_of(scorer.bundle)
    state = check(store, reference, scorer.spec.signals, limits, DEFAULT_MONITOR, START + n, START,
                  advisory_per_hour=0.9)
    assert state["episodes_opened"]["advisory"] == 4 and state["alarms_per_bed_hour"]["advisory"] == 12.0
    assert state["reference_alarms_per_bed_hour"]["advisory"] == 0.9
    alert = [a for a in state["alerts"] if a["check"] == "alarm_rate:advisory"]
    assert alert and alert[0]["message"].startswith("12.0 advisory episodes per bed-hour, over 3 x the real "
                                                    "recordings' (where the registry chose it) 0.90"), state["alerts"]
    for expected in (5.0, None):
        state = check(store, reference, scorer.spec.signals, limits, DEFAULT_MONITOR, START + n, START,
                      advisory_per_hour=expected)
        assert not [a for a in state["alerts"] if a["check"] == "alarm_rate:advisory"], state["alerts"]
