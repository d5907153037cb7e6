"""Alarm post-processing and event-level metrics on hand-made recordings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import AlarmRule, ConfigError
from biostream.core.params import ObjectiveParams, section
from biostream.models.alarms import AlarmPolicy, alarm_episodes, apply_policy
from biostream.models.metrics import evaluate_scores, event_metrics, point_metrics, rule_event_metrics, second_labels
from biostream.models.objective import Objective


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
    out = pd.DataFrame(rows, columns=["patient_id", "start_s", "end_s", "kind", "event_class"])
    return out.assign(category=np.where(out["event_class"] == "technical", "artefact", "clinical"))


def test_event_metrics_counts_catches_false_alarms_and_delay():
    events = events_table([
        ["p", 100, 200, "hypotension", "physiological"],
        ["p", 400, 500, "level_shift", "physiological"],
    ])
    episodes = pd.DataFrame({"patient_id": ["p"] * 3, "start_s": [95, 150, 600], "end_s": [98, 160, 610]})
    m = event_metrics(episodes, events, hours=2.0, tolerance_s=10)
    assert m["events"] == 2 and m["alarms"] == 3
    assert m["event_recall"] == 0.5 and m["event_precision"] == pytest.approx(2 / 3)
    assert m["false_alarms"] == 1 and m["false_alarms_per_hour"] == 0.5
    assert m["median_delay_s"] == -5.0  # the alarm at 95 started 5 s early, within the tolerance
    assert m["recall_by_kind"] == {"hypotension": 1.0, "level_shift": 0.0}
    assert m["events_by_kind"] == {"hypotension": 1, "level_shift": 1}


def test_weighted_recall_costs_a_missed_hypotension_more_than_a_missed_drift():
    objective = Objective("physiological.weighted_f1", {"hypotension": 3.0, "tachycardia": 2.0}, 0.5)
    events = events_table([["p", 100, 200, "hypotension", "physiological"],
                           ["p", 400, 500, "drift", "physiological"],
                           ["p", 700, 800, "hypotension+tachycardia", "physiological"]])
    drift_only = pd.DataFrame({"patient_id": ["p"], "start_s": [450], "end_s": [460]})
    hypo_only = pd.DataFrame({"patient_id": ["p"], "start_s": [150], "end_s": [160]})
    m_drift = event_metrics(drift_only, events, 1.0, 0, objective)
    m_hypo = event_metrics(hypo_only, events, 1.0, 0, objective)
    assert m_drift["event_recall"] == m_hypo["event_recall"] == pytest.approx(1 / 3)
    assert m_drift["weighted_recall"] == pytest.approx(0.5 / 6.5)
    assert m_hypo["weighted_recall"] == pytest.approx(3 / 6.5)
    assert m_hypo["weighted_f1"] > m_drift["weighted_f1"]
    assert objective.weight("hypotension+tachycardia") == 3.0 and objective.weight("level_shift") == 0.5
    # an event of two rule kinds counts for each in recall by kind
    both = event_metrics(pd.DataFrame({"patient_id": ["p"], "start_s": [750], "end_s": [760]}), events, 1.0, 0)
    assert both["recall_by_kind"] == {"drift": 0.0, "hypotension": 0.5, "tachycardia": 1.0}


def _event_metrics_one_episode_at_a_time(episodes, events, tolerance_s):
    """The definition of `event_metrics`, episode by episode (its implementation before it was vectorised)."""
    ev = events.reset_index(drop=True)
    caught = np.zeros(len(ev), dtype=bool)
    delay = np.full(len(ev), np.nan)
    true_alarm = np.zeros(len(episodes), dtype=bool)
    for i, ep in enumerate(episodes.itertuples()):
        for j, e in enumerate(ev.itertuples()):
            if e.patient_id == ep.patient_id and ep.start_s < e.end_s and ep.end_s > e.start_s - tolerance_s:
                caught[j] = true_alarm[i] = True
                delay[j] = np.fmin(delay[j], ep.start_s - e.start_s)
    return caught, delay, true_alarm


def test_event_metrics_equal_their_definition_on_random_alarms():
    rng = np.random.default_rng(3)
    pids = ["a", "b", "c"]
    events = events_table([[pids[i % 3], s, s + int(rng.integers(10, 200)), ["hypotension", "drift"][i % 2],
                            "physiological"] for i, s in enumerate(rng.integers(0, 20000, 60))])
    starts = rng.integers(0, 20000, 400)
    episodes = pd.DataFrame({"patient_id": rng.choice(pids, 400), "start_s": starts,
                             "end_s": starts + rng.integers(1, 120, 400)})
    m = event_metrics(episodes, events, hours=3.0, tolerance_s=30)
    caught, delay, true_alarm = _event_metrics_one_episode_at_a_time(episodes, events, 30)
    assert 0 < caught.mean() < 1 and 0 < true_alarm.mean() < 1
    assert m["alarms"] == len(episodes) and m["false_alarms"] == (~true_alarm).sum()
    assert m["event_recall"] == caught.mean() and m["event_precision"] == true_alarm.mean()
    assert m["median_delay_s"] == np.nanmedian(delay)
    assert m["recall_by_kind"] == events.assign(c=caught).groupby("kind")["c"].mean().to_dict()


def test_no_alarms_and_other_patients():
    events = events_table([["p", 100, 200, "hypotension", "physiological"]])
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


@dataclass
class Out:
    score: np.ndarray
    technical: np.ndarray


def test_physiological_and_technical_alarms_are_apart():
    """An alarm on a probe-off, called technical, is a caught technical event and no physiological false alarm;
    the same alarm called physiological is a physiological false alarm (the clinician goes to the patient) and the
    technical event is missed. Per second, technical seconds are left out of the physiological metrics."""
    n = 600
    pid, t = grid(n)
    label, artefact = np.zeros(n, dtype=int), np.zeros(n, dtype=int)
    label[100:160] = 1  # a hypotension
    artefact[400:430] = 1  # a probe-off
    rows = pd.DataFrame({"patient_id": pid, "time_s": t, "label": label, "artefact": artefact,
                         "alarm": 0, "ew_any": 0})
    events = events_table([["p", 100, 160, "hypotension", "physiological"], ["p", 400, 430, "probe_off", "technical"]])
    scores = np.where((label + artefact) > 0, 5.0, -1.0) + np.linspace(0, 0.1, n)
    policy = AlarmPolicy(k=3, n=5, refractory_s=0, tolerance_s=0)
    classed, alarms = evaluate_scores(rows, events, Out(scores, artefact > 0), 0.0, policy)
    assert classed["physiological"]["event_recall"] == 1.0 and classed["physiological"]["false_alarms"] == 0
    assert classed["technical"]["event_recall"] == 1.0 and classed["technical"]["false_alarms"] == 0
    assert alarms["physiological"][100:160].sum() == 58 and not alarms["physiological"][400:430].any()
    assert alarms["technical"][402:430].all()
    # the alarm needs k = 3 seconds above: the event's first 2 seconds are missed; the probe-off's seconds are out
    assert classed["point"]["auprc"] == pytest.approx(1.0) and classed["point"]["recall"] == pytest.approx(58 / 60)
    positive, counted = second_labels(rows)
    assert positive.sum() == 60 and counted.sum() == n - 30 and not positive[400:430].any()
    unclassed, _ = evaluate_scores(rows, events, Out(scores, np.zeros(n, dtype=bool)), 0.0, policy)
    assert unclassed["physiological"]["false_alarms"] == 1 and unclassed["technical"]["event_recall"] == 0.0
    assert unclassed["physiological"]["event_precision"] == 0.5


def test_bedside_view_counts_rule_events_and_every_alarm():
    n = 900
    pid, t = grid(n)
    inside = np.zeros(n, dtype=int)
    inside[200:300] = inside[600:700] = 1
    rows = pd.DataFrame({"patient_id": pid, "time_s": t, "label": inside, "artefact": 0, "alarm": inside,
                         "ew_any": 0})
    rule_events = pd.DataFrame({"alarm_event_id": [0, 1], "patient_id": ["p", "p"], "start_s": [200, 600],
                                "end_s": [300, 700], "kind": ["hypotension", "desaturation"], "signal": ["map", "spo2"],
                                "extreme": [50.0, 85.0]})
    scores = np.where(inside > 0, 1.0, -1.0)
    scores[:100] = -5  # far from any limit: ranks lowest
    m = rule_event_metrics(rows, rule_events, scores, inside.astype(bool), tolerance_s=30)
    assert m["events"] == 2 and m["recall"] == 1.0 and m["auroc"] == 1.0
    assert m["alarms_per_hour"] == pytest.approx(2 / (n / 3600))
    half = inside.astype(bool) & (t < 400)
    m = rule_event_metrics(rows, rule_events, scores, half, tolerance_s=30)
    assert m["recall"] == 0.5 and m["recall_by_kind"] == {"desaturation": 0.0, "hypotension": 1.0}


def test_objective_is_checked_and_reads_a_path():
    rules = [AlarmRule("hypotension", "map", "<", 65, 60, "s", 5, 3)]
    objective = Objective.of(section(ObjectiveParams, {"metric": "physiological.weighted_f1", "other_weight": 0.5}),
                             rules)
    assert objective.kind_weights == {"hypotension": 3.0}
    assert objective.value({"physiological": {"weighted_f1": 0.7}}) == 0.7
    with pytest.raises(KeyError, match="no 'weighted_f1'"):
        objective.value({"physiological": {}})
    with pytest.raises(ConfigError, match="is not a path into the metrics"):
        section(ObjectiveParams, {"metric": "event_f1", "other_weight": 0.5})


def test_policy_params_are_checked():
    with pytest.raises(ConfigError, match=r"k \(4\) of the last n \(3\) seconds: k must be at most n"):
        section(AlarmPolicy, {"k": 4, "n": 3, "refractory_s": 0, "tolerance_s": 0})
    with pytest.raises(ConfigError, match="refractory_s: Input should be greater than or equal to 0"):
        section(AlarmPolicy, {"k": 1, "n": 3, "refractory_s": -1, "tolerance_s": 0})


def test_a_bedside_rule_that_fires_alarms_at_once_a_learned_score_after_k_of_n():
    """A rule's score is above 0 only once the rule has held for its duration (the monitor's alarm delay): that
    second alarms at once, so an event exactly as long as the rule's duration is caught at its last second; a
    learned score above threshold for one second is not an alarm (k of n)."""
    t = np.arange(20)
    pid = np.zeros(20)
    policy = AlarmPolicy(k=3, n=5, refractory_s=0, tolerance_s=0)
    scores = np.full(20, -1.0)
    scores[9] = 0.5
    assert apply_policy(pid, t, scores, 0.0, policy).sum() == 0
    fired = apply_policy(pid, t, scores, 0.0, policy, immediate=scores > 0)
    assert fired.tolist() == [0] * 9 + [1] + [0] * 10
