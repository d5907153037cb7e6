"""Alarm post-processing and event-level metrics on hand-made recordings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import ConfigError
from biostream.models.evaluation import (
    AlarmPolicy,
    alarm_episodes,
    apply_policy,
    evaluate_scores,
    event_metrics,
    point_metrics,
    second_labels,
)


def grid(n, patient="p"):
    return np.full(n, patient, dtype=object), np.arange(n)


def test_k_of_n_needs_k_seconds_and_stays_within_a_patient():
    pid, t = grid(20)
    scores = np.zeros(20)
    scores[[3, 5]] = 1  # 2 of 3 seconds at t=5
    scores[10] = 1  # an isolated second
    alarm = apply_policy(pid, t, scores, 0.5, AlarmPolicy(k=2, n=3, refractory_s=0, tolerance_s=0))
    assert np.flatnonzero(alarm).tolist() == [5]
    pid2 = np.r_[np.full(3, "a", dtype=object), np.full(3, "b", dtype=object)]
    t2 = np.r_[np.arange(3), np.arange(3)]
    s2 = np.array([0, 0, 1, 1, 0, 0])  # one above at the end of a, one at the start of b
    assert apply_policy(pid2, t2, s2, 0.5, AlarmPolicy(2, 3, 0, 0)).sum() == 0


def test_refractory_merges_flapping_alarms():
    pid, t = grid(100)
    scores = np.zeros(100)
    scores[10:15] = scores[20:25] = scores[80:85] = 1
    no_merge = apply_policy(pid, t, scores, 0.5, AlarmPolicy(1, 1, 0, 0))
    merged = apply_policy(pid, t, scores, 0.5, AlarmPolicy(1, 1, 30, 0))
    assert len(alarm_episodes(pid, t, no_merge)) == 3
    eps = alarm_episodes(pid, t, merged)
    assert eps[["start_s", "end_s"]].values.tolist() == [[10, 25], [80, 85]]


def events_table(rows):
    return pd.DataFrame(rows, columns=["patient_id", "start_s", "end_s", "kind", "category"])


def test_event_metrics_counts_catches_false_alarms_and_delay():
    events = events_table([
        ["p", 100, 200, "hypotension", "clinical"],
        ["p", 400, 500, "spike", "statistical"],
        ["p", 700, 710, "probe_off", "artefact"],
    ])
    episodes = pd.DataFrame({"patient_id": ["p"] * 4, "start_s": [95, 150, 600, 702], "end_s": [98, 160, 610, 705]})
    m = event_metrics(episodes, events, hours=2.0, tolerance_s=10)
    assert m["events"] == 3 and m["alarms"] == 4
    assert m["event_recall"] == pytest.approx(2 / 3)
    assert m["event_precision"] == pytest.approx(3 / 4)
    assert m["false_alarms"] == 1 and m["false_alarms_per_hour"] == 0.5
    assert m["median_delay_s"] == pytest.approx(np.median([-5, 2]))
    assert m["recall_by_kind"] == {"hypotension": 1.0, "probe_off": 1.0, "spike": 0.0}
    assert m["event_f1"] == pytest.approx(2 * (3 / 4) * (2 / 3) / (3 / 4 + 2 / 3))

    without = event_metrics(episodes, events, hours=2.0, tolerance_s=10, include_artefacts=False)
    assert without["events"] == 2 and without["alarms"] == 3, "the alarm on the artefact is left out"
    assert without["false_alarms"] == 1 and without["event_recall"] == 0.5


def _event_metrics_one_episode_at_a_time(episodes, events, tolerance_s, include_artefacts):
    """The definition of `event_metrics`, episode by episode (its implementation before it was vectorised)."""
    ev = (events if include_artefacts else events[events["category"] != "artefact"]).reset_index(drop=True)
    artefacts = events[events["category"] == "artefact"] if not include_artefacts else events.iloc[:0]
    caught, delay = np.zeros(len(ev), dtype=bool), np.full(len(ev), np.nan)
    true_alarm, ignored = np.zeros(len(episodes), dtype=bool), np.zeros(len(episodes), dtype=bool)
    for i, ep in enumerate(episodes.itertuples(index=False)):
        g = ev[ev["patient_id"] == ep.patient_id]
        hit = (ep.start_s < g["end_s"].to_numpy()) & (ep.end_s > g["start_s"].to_numpy() - tolerance_s)
        if hit.any():
            true_alarm[i] = True
            for j, start in zip(g.index[hit], g["start_s"].to_numpy()[hit], strict=True):
                caught[j] = True
                if np.isnan(delay[j]) or ep.start_s - start < delay[j]:
                    delay[j] = ep.start_s - start
            continue
        a = artefacts[artefacts["patient_id"] == ep.patient_id]
        ignored[i] = ((ep.start_s < a["end_s"].to_numpy()) & (ep.end_s > a["start_s"].to_numpy())).any()
    return caught, delay, true_alarm, ignored


@pytest.mark.parametrize("include_artefacts", [True, False])
def test_event_metrics_equal_their_definition_on_random_alarms(include_artefacts):
    """Hundreds of random episodes over random events of several patients, overlapping in every way."""
    rng = np.random.default_rng(11)
    kinds = [("hypotension", "clinical"), ("drift", "statistical"), ("probe_off", "artefact")]
    ev_rows = []
    for p in ("a", "b", "c"):
        for start in np.sort(rng.choice(5000, 12, replace=False)):
            kind, category = kinds[rng.integers(len(kinds))]
            ev_rows.append([p, int(start), int(start + rng.integers(5, 300)), kind, category])
    events = events_table(ev_rows)
    starts = rng.integers(0, 5400, 400)
    episodes = pd.DataFrame({"patient_id": rng.choice(["a", "b", "c", "d"], 400), "start_s": starts,
                             "end_s": starts + rng.integers(1, 60, 400)})
    m = event_metrics(episodes, events, hours=3.0, tolerance_s=30, include_artefacts=include_artefacts)
    caught, delay, true_alarm, ignored = _event_metrics_one_episode_at_a_time(episodes, events, 30, include_artefacts)
    assert 0 < caught.mean() < 1 and 0 < true_alarm.mean() < 1 and (ignored.any() or include_artefacts)
    counted = ~ignored
    assert m["alarms"] == counted.sum() and m["false_alarms"] == (counted & ~true_alarm).sum()
    assert m["event_recall"] == caught.mean() and m["event_precision"] == true_alarm[counted].mean()
    assert m["median_delay_s"] == np.nanmedian(delay)
    ev = events if include_artefacts else events[events["category"] != "artefact"]
    assert m["recall_by_kind"] == ev.assign(c=caught).groupby("kind")["c"].mean().to_dict()


def test_no_alarms_and_other_patients():
    events = events_table([["p", 100, 200, "hypotension", "clinical"]])
    none = pd.DataFrame({"patient_id": [], "start_s": [], "end_s": []})
    m = event_metrics(none, events, hours=1.0, tolerance_s=0)
    assert m["event_recall"] == 0 and np.isnan(m["event_precision"]) and m["event_f1"] == 0.0
    other = pd.DataFrame({"patient_id": ["q"], "start_s": [150], "end_s": [160]})
    assert event_metrics(other, events, 1.0, 0)["false_alarms"] == 1


def test_point_metrics():
    labels = np.array([0, 0, 1, 1])
    m = point_metrics(labels, np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1]))
    assert m["auroc"] == 1.0 and m["auprc"] == 1.0
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0


def test_artefact_seconds_count_per_second_as_they_count_per_event():
    """With artefacts, a probe-off the detector flags is a caught event and its seconds are true positives;
    without, it neither counts as an event nor as seconds (it used to count as negative seconds: the same alarm
    rewarded per event and punished per second)."""
    n = 600
    pid, t = grid(n)
    label, artefact = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    label[100:160] = 1  # an anomaly
    artefact[400:430] = 1  # a probe-off
    rows = pd.DataFrame({"patient_id": pid, "time_s": t, "label": label, "artefact": artefact,
                         "alarm": 0, "ew_any": 0})
    events = pd.DataFrame({"patient_id": ["p", "p"], "start_s": [100, 400], "end_s": [160, 430],
                           "kind": ["drift", "probe_off"], "category": ["statistical", "artefact"]})
    scores = np.where((label + artefact) > 0, 5.0, 0.0) + np.linspace(0, 0.1, n)
    policy = AlarmPolicy(k=3, n=5, refractory_s=0, tolerance_s=0)
    m, _ = evaluate_scores(rows, events, scores, 1.0, policy)
    assert m["events"]["event_recall"] == 1.0 and m["events"]["false_alarms"] == 0
    # the alarm needs k = 3 seconds above: each event's first 2 seconds are missed
    assert m["point"]["auprc"] == pytest.approx(1.0) and m["point"]["recall"] == pytest.approx(86 / 90)
    assert m["events_without_artefacts"]["events"] == 1 and m["events_without_artefacts"]["false_alarms"] == 0
    assert m["point_without_artefacts"]["auprc"] == pytest.approx(1.0)
    positive, counted = second_labels(rows, include_artefacts=False)
    assert positive.sum() == 60 and counted.sum() == n - 30 and not positive[400:430].any()
    positive, counted = second_labels(rows, include_artefacts=True)
    assert positive.sum() == 90 and counted.all()
    # a detector blind to the artefact: a missed event, and 30 missed positive seconds
    blind = np.where(label > 0, 5.0, 0.0)
    m, _ = evaluate_scores(rows, events, blind, 1.0, policy)
    assert m["events"]["event_recall"] == 0.5 and m["point"]["recall"] == pytest.approx(58 / 90)
    assert m["point_without_artefacts"]["recall"] == pytest.approx(58 / 60)


def test_policy_params_are_checked():
    with pytest.raises(ConfigError, match="1 <= k <= n"):
        AlarmPolicy.from_params({"alarms": {"k": 4, "n": 3, "refractory_s": 0, "tolerance_s": 0}})
