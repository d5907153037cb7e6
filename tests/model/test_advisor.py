"""The served advisory (`biostream.models.advisor`): on a real MIMIC record the service's advisory is the one the
evaluate stage judged (same seconds, same episodes), a window's advisory is its last second's, each candidate's
reason says in words what turned it on, and the serving spec carries it through JSON (the bento's metadata)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from biostream.models.advisor import Advisor
from biostream.models.advisory import advisories, candidate_scores
from biostream.models.candidates import Advisories
from biostream.serving import Scorer, ServingSpec
from biostream.serving.schemas import Schemas
from tests.conftest import ROOT

RECORD = "real-mimic3_p000020_numerics_1perMin"  # 21.9 h, 33 hypotensions


@pytest.fixture(scope="module")
def config(configs) -> Advisories:
    return Advisories.load(ROOT / "configs/advisories.yaml", configs.rules)


@pytest.fixture(scope="module")
def record(real, configs):
    """The record's rows (one patient, every second) and its values (S, T) in the catalog's signal order."""
    frame = real.vitals[real.vitals["patient_id"] == RECORD].sort_values("time_s").reset_index(drop=True)
    t = frame["time_s"].to_numpy()
    assert np.array_equal(t, np.arange(t[0], t[0] + len(t)))  # every second: a recording as a bed streams it
    return frame, frame[list(configs.signals.keys)].to_numpy(np.float64).T


def advisor(config, configs, name: str = "map_extrapolated") -> Advisor:
    return Advisor.build(config, name, configs.rules, configs.signals, configs.signals.keys, "a test", "real")


@pytest.mark.parametrize("name", ["map_extrapolated", "map_below_73", "personalised", "current", "raised_limits",
                                  "map_falling_below_73"])
def test_a_recording_gets_the_advisory_the_evaluation_judged(config, configs, record, name):
    frame, values = record
    adv = advisor(config, configs, name)
    advice = adv.series(values, configs.signals.keys)
    judged = advisories(candidate_scores(config.candidate(name), adv.rules, frame), frame, config.episodes.policy)
    np.testing.assert_array_equal(advice.on, judged.any_on(len(frame)))
    t0 = int(frame["time_s"].iloc[0])
    got = advice.episodes[["start_s", "end_s", "kind"]].assign(start_s=lambda e: e.start_s + t0,
                                                             end_s=lambda e: e.end_s + t0)
    want = judged.episodes.sort_values("start_s", kind="stable")[["start_s", "end_s", "kind"]]
    assert got.values.tolist() == want.values.tolist() and len(got) > 0
    rules = {r.kind: r for r in adv.rules}
    for e in advice.episodes.itertuples():
        rule = rules[e.kind]
        label = configs.signals[rule.signal].label
        assert e.reason.startswith(label) and f"{rule.threshold:g}" in e.reason, e.reason
        held = frame[rule.signal].iloc[: e.start_s + 1].dropna().iloc[-1]  # the value a monitor shows then
        d = configs.signals[rule.signal].decimals  # more where the value would round onto the limit
        shown = [f"{held:.{k}f} " for k in range(d, d + 4)]
        assert any(f"{label} {v}" in e.reason or f": {v}" in e.reason for v in shown), e.reason
        assert e.signals == [rule.signal]


def test_the_extrapolation_reason_gives_the_level_and_the_fitted_change(config, configs, record):
    frame, values = record
    adv = advisor(config, configs)
    first = adv.series(values, configs.signals.keys).episodes.iloc[0]
    m = re.fullmatch(r"MAP falling: (\d+) mmHg, ([-+]\d+) mmHg in 10 min; below 65 (within 5 min at this rate|"
                     r"already)", first.reason)
    assert m, first.reason
    i = int(first.start_s)
    window = frame["map"].to_numpy()[i - 599: i + 1]
    x = np.arange(600)[np.isfinite(window)]
    slope = np.polyfit(x, window[np.isfinite(window)], 1)[0]
    assert int(m.group(2)) == round(slope * 600)  # the least-squares line's change over its 10 min


def test_a_window_is_advised_as_its_last_second_and_too_short_a_window_cannot_be_judged(config, configs, record):
    frame, values = record
    adv = advisor(config, configs)
    score = candidate_scores(adv.candidate, adv.rules, frame)["hypotension"]  # k = n = 1: the second's own score
    starts = adv.series(values, configs.signals.keys).episodes["start_s"].to_numpy()
    ends = np.r_[starts - 1, starts, starts + 30, np.arange(2000, values.shape[1], 1777)]
    ends = ends[(ends >= 1799) & (ends < values.shape[1])]
    x = np.stack([values[:, e - 1799: e + 1] for e in ends])  # windows of 1,800 s, as the service gets them
    got, reasons = adv.windows(x, configs.signals.keys)
    assert got == [None if np.isnan(score[e]) else bool(score[e] > 0) for e in ends]  # None: too little MAP
    assert got.count(True) >= 3 and got.count(False) >= 3 and None in got
    for g, r in zip(got, reasons, strict=True):
        if g is None:
            assert r is not None and r.startswith("cannot judge: fewer than 300 of the last 600 s of MAP"), r
        else:
            assert (r is not None and r.startswith("MAP ")) if g else r is None, r
    short, why = adv.windows(values[None, :, 5000:5200], configs.signals.keys)
    assert short == [None]
    lab = adv.labels["map"]  # a value that rounds onto the limit shows one more decimal
    assert (lab.value(72.6, 73.0), lab.value(71.6, 73.0), lab.value(73.0, 73.0), lab.value(72.98, 73.0)) == (
        "72.6 mmHg", "72 mmHg", "73 mmHg", "72.98 mmHg")
    assert why == ["cannot judge: fewer than 300 of the last 600 s of MAP have a value (the advisory extrapolates "
                   "600 s; send windows of that length)"]


@pytest.fixture(scope="module")
def advised(config, configs, fitted, model_data) -> tuple[Scorer, Scorer]:
    """The iforest's scorer without an advisory, and with the served map_extrapolated, its spec through JSON (what
    the package stage stores in the bento model's metadata)."""
    from tests.model.conftest import scorer_for

    base = scorer_for(fitted["iforest"], model_data, configs)
    spec = dataclasses.replace(base.spec, advisory=advisor(config, configs).to_dict())
    return base, Scorer(base.bundle, ServingSpec.from_dict(json.loads(json.dumps(spec.to_dict()))))


def test_the_scorer_answers_the_advisory_on_predict_score_series_and_metadata(config, configs, advised, record):
    """/predict gives each window's advisory and reason, /score_series every second's and the episodes, /metadata
    which advisory and why; a bento packaged before advisories answers none."""
    base, scorer = advised
    adv, spec = scorer.spec.advisor, scorer.spec
    assert adv == advisor(config, configs)
    frame, values = record
    starts = adv.series(values, configs.signals.keys).episodes["start_s"]
    start = int(starts[starts >= 1799].iloc[0])
    schemas = Schemas(spec)
    sig = spec.signals
    order = [configs.signals.keys.index(s) for s in sig]
    window = values[order, start - 1799: start + 1]
    body = {"patient_id": "bed-1", "time": "2026-12-08T10:00:00Z",
            "vitals": {s: [None if np.isnan(v) else float(v) for v in window[i]] for i, s in enumerate(sig)}}
    pred = scorer.predict([schemas.Window.model_validate(body)])[0]
    assert pred.advisory is True and pred.advisory_reason.startswith("MAP falling: ")
    assert scorer.metadata().advisory["source"] == "map_extrapolated"
    assert scorer.metadata().advisory["reads_s"] == 600
    series = {"patient_id": "bed-1", "start": datetime(2026, 12, 8, tzinfo=UTC).isoformat(),
              "vitals": {s: [None if np.isnan(v) else float(v) for v in values[order[i], :4000]]
                         for i, s in enumerate(sig)}}
    res = scorer.score_series(schemas.Series.model_validate(series))
    assert len(res.advisory) == 4000 and sum(res.advisory) > 0
    assert res.advisories and all(a.source == "map_extrapolated" and a.kind == "hypotension" and a.signals == ["map"]
                                  for a in res.advisories)
    assert [a.start for a in res.advisories] == sorted(a.start for a in res.advisories)
    # a spec without an advisory (a bento packaged before advisories): none answered, none invented
    assert base.predict([schemas.Window.model_validate(body)])[0].advisory is None
    assert base.metadata().advisory is None



@pytest.mark.parametrize("name", ["map_extrapolated", "map_below_73", "personalised", "current", "raised_limits",
                                  "map_falling_below_73"])
def test_a_windows_last_second_scores_as_the_whole_recordings_second(config, configs, record, name):
    """The fast path (`window_scores`: the window's own columns) equals the rolling computation of the evaluation
    (`candidate_scores`) at each window's last second, once a window's worth of the recording is seen."""
    frame, values = record
    adv = advisor(config, configs, name)
    whole = candidate_scores(config.candidate(name), adv.rules, frame)
    ends = np.arange(1799, values.shape[1], 997)
    x = np.stack([values[:, e - 1799: e + 1] for e in ends])
    last = adv.last(x, configs.signals.keys)
    assert set(last) == set(whole)
    for kind, score in last.items():
        np.testing.assert_allclose(score, whole[kind][ends], rtol=1e-7, atol=1e-7, err_msg=kind)  # cumsum rounding
    assert np.isfinite(last["hypotension"]).any()


def test_a_recordings_case_report_shows_the_advisories_apart_from_the_alarms(configs, advised, record):
    from biostream.reporting.case import CLASS_COLOURS, case_of_recording, episode_rows

    _, scorer = advised
    frame, values = record
    order = [configs.signals.keys.index(s) for s in scorer.spec.signals]
    case = case_of_recording(scorer, values[order, :4000], datetime(2026, 12, 8, tzinfo=UTC), RECORD)
    served = scorer.series_advisories(values[order, :4000], datetime(2026, 12, 8, tzinfo=UTC))[1]
    yellow = [e for e in case.episodes if e.alarm_class == "advisory"]
    assert len(yellow) == len(served) > 0 and CLASS_COLOURS["advisory"] == "#e6b800"
    assert [e.start for e in yellow] == [int(a.start.timestamp()) for a in served]
    assert all(e.reason.startswith("MAP falling: ") and e.reason.endswith("(map_extrapolated)") for e in yellow)
    summary = case.summary()
    assert f"Advisory episodes (a warning that an event is likely soon, never an alarm): {len(yellow)}" in summary
    assert summary.count("- yellow advisory from") == len(yellow)
    assert case.counts()["advisory"] == len(yellow)
    assert any(row[2] == "advisory" and row[5].startswith("MAP falling") for row in episode_rows(case))


def test_a_streamed_bed_gets_its_recordings_advisories_beside_the_same_alarms(configs, advised, record, model_data,
                                                                              tmp_path):
    """A real record streamed in stretches of 1-90 s, with a 30-s hole and a second process taking over halfway:
    the store's advisory episodes are those `score_series` gives the recording whole (start, end, kind, reason), each
    answered second says whether one is on, and the alarms are exactly those of the same stream without an advisory
    (the floor as it is); the monitoring counts them apart, its recall the alarms'. An advisory is acknowledged like an
    alarm, by its kind."""
    from biostream.serving.streaming.engine import Chunk, StreamEngine
    from biostream.serving.streaming.http import StreamEndpoints
    from biostream.serving.streaming.store import Store, sqlite_url
    from tests.model.test_streams import START, params

    base, scorer = advised
    frame, values = record
    order = [configs.signals.keys.index(s) for s in scorer.spec.signals]
    x = values[order, :7000].copy()
    x[:, 5000:5030] = np.nan  # a hole: nothing arrives for 30 s (scored as missing, as score_series scores NaN)
    want = scorer.series_advisories(x, datetime.fromtimestamp(START, UTC))
    assert len(want[1]) >= 2, "the stretch must advise for this test to compare episodes"
    stores = {}
    answered: dict[int, bool] = {}
    for name, sc in (("plain", base), ("advised", scorer)):
        url = sqlite_url(tmp_path / f"{name}.db")
        engines = [StreamEngine(sc, Store(url), params(url)) for _ in range(2)]
        rng = np.random.default_rng(1)
        a = 0
        while a < x.shape[1]:
            if 5000 <= a < 5030:  # the hole: the gateway sends nothing; the next message's first second follows it
                a = 5030
                continue
            m = int(rng.integers(1, 91)) if a >= 5000 else min(int(rng.integers(1, 91)), 5000 - a)
            answers, _ = engines[a >= 3500].ingest([Chunk("bed-a", START + a, x[:, a:a + m].copy())], now=float(a))
            if name == "advised":
                answered.update({int(pd.Timestamp(s["time"]).timestamp()) - START: s["advisory"]
                                 for s in answers[0].seconds})
            a += m
        engines[1].close(["bed-a"])
        stores[name] = engines[1].store
    plain, advised_store = (stores[n].episodes("bed-a", limit=10 ** 6) for n in ("plain", "advised"))
    alarms = [e for e in advised_store if e["alarm_class"] != "advisory"]
    strip = ("opened_at", "closed_at")
    assert [{k: v for k, v in e.items() if k not in strip} for e in alarms] == [
        {k: v for k, v in e.items() if k not in strip} for e in plain]
    got = [(e["start"] - START, e["end"] - START, e["kind"], e["reason"], json.loads(e["signals"]))
           for e in advised_store if e["alarm_class"] == "advisory"]
    expect = [(int(a.start.timestamp()) - START, int(a.end.timestamp()) - START, a.kind, a.reason, a.signals)
              for a in want[1]]
    assert got == expect
    on = np.asarray(want[0])
    said = np.asarray([answered[t] for t in range(x.shape[1])])  # every second answered once, the hole's too
    # a second is answered on where the k-of-n rule is; the refractory merge joins episodes later, as for alarms
    assert said.sum() > 0 and (said <= on).all() and said.sum() >= 0.9 * on.sum()

    # the monitoring counts advisory episodes per bed-hour apart; its live recall is the alarms' alone
    from types import SimpleNamespace

    from biostream.core.params import DEFAULT_MONITOR
    from biostream.monitoring.live import check
    from biostream.reporting.case import limits_of
    from biostream.stages.train import training_reference

    reference = training_reference(SimpleNamespace(rows=model_data.train, vitals=model_data.dataset.vitals),
                                   model_data.pipeline.signals, ["synthetic"])
    live = {n: check(stores[n], reference, scorer.spec.signals, limits_of(scorer.bundle), DEFAULT_MONITOR,
                     until=START + x.shape[1], since=START) for n in stores}
    assert live["advised"]["episodes_opened"]["advisory"] == len(got) and "advisory" not in live["plain"][
        "episodes_opened"]
    hours = live["advised"]["period"]["bed_hours"]
    assert live["advised"]["alarms_per_bed_hour"]["advisory"] == pytest.approx(len(got) / hours, rel=1e-3)
    assert live["advised"]["recall"] == live["plain"]["recall"] and live["plain"]["recall"]["events"] > 0

    endpoints = StreamEndpoints(StreamEngine(scorer, stores["advised"], params(stores["advised"].url)))
    first = got[0][0] + START
    from biostream.serving.streaming.answers import iso

    status, body = endpoints.acknowledge_now("bed-a", iso(first), "key-1", now=1.0, query="advisory=hypotension")
    assert status == 200 and body["changed"] and body["episode"]["alarm_class"] == "advisory"
    assert body["episode"]["kind"] == "hypotension" and body["episode"]["acknowledged_by"] == "key-1"
    status, body = endpoints.acknowledge_now("bed-a", iso(first), "key-1", now=2.0, query="advisory=tachycardia")
    assert status == 400 and "the served advisory warns of ['hypotension']" in body["error"]
    status, body = endpoints.acknowledge_now("bed-a", iso(first), "key-1", now=2.0)  # the alarm of that second
    assert status == 404 and "no alarm episode that started at" in body["error"]


def test_the_gated_limits_reason_says_which_gate_opened_it(config, configs):
    """map_falling_below_73 says the value, the raised limit, and what opened it: the 10-min line's fall, a
    hypotension within the last 30 min, or both; the alarm's limit beside."""
    adv = advisor(config, configs, "map_falling_below_73")
    keys = configs.signals.keys
    m = np.full(6000, 76.0)
    m[1000:1600] = np.linspace(76, 68, 600)  # falling 8 mmHg in 10 min, below 73 from ~1,225
    m[1600:1900] = 60  # a hypotension (its advisory off while the rule holds: more than the refractory 120 s)
    m[1900:] = 70  # flat at 70 after it
    values = np.full((len(keys), len(m)), np.nan)
    values[keys.index("map")] = m
    eps = adv.series(values, keys).episodes
    assert len(eps) == 2, eps
    first, second = eps.itertuples()
    assert re.fullmatch(r"MAP 72\.\d+ mmHg, below 73 \(the raised limit\), falling -\d mmHg in 10 min; the alarm is "
                        r"at 65", first.reason), first.reason
    # after the hypotension: the recurrence gate (and the 10-min line, which still reaches back into it)
    assert second.reason.startswith("MAP 70 mmHg, below 73 (the raised limit), ") and second.reason.endswith(
        "below 65 within the last 30 min; the alarm is at 65"), second.reason
    later = adv.reason_of_window(values[:, 2600 - 1799:2601], keys, ["hypotension"])  # the line flat by then
    assert later == "MAP 70 mmHg, below 73 (the raised limit), below 65 within the last 30 min; the alarm is at 65"
    assert second.start_s == 1900 and second.end_s == 1899 + 1800  # until 30 min after the last second below 65
    # a window ending where the first episode starts gives the same reason, from its own seconds
    end = int(first.start_s)
    x = np.concatenate([np.full((len(keys), 1799 - end), np.nan), values[:, :end + 1]], axis=1)[None]  # NaN before
    on, reasons = adv.windows(x, keys)
    assert on == [True] and reasons == [first.reason]
