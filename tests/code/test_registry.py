"""Champion selection rules (the pure part of `biostream.tracking.registry`)."""

from __future__ import annotations

import math

import pytest

from biostream.core.config import ConfigError
from biostream.core.params import section
from biostream.tracking.registry import (
    RegisterParams,
    choose,
    decide,
    fingerprint,
    metric_at,
    model_card,
    real_check,
    real_figures,
    safety_check,
)


def _metrics(f1: float, auprc: float = 0.5) -> dict:
    return {"events": {"event_f1": f1, "event_recall": 0.6, "event_precision": 0.9, "false_alarms_per_hour": 0.1,
                       "median_delay_s": 30.0, "recall_by_kind": {"drift": 0.25, "tachycardia": 1.0}},
            "point": {"auroc": 0.8, "auprc": auprc}}


EVALUATION = {"iforest": {"synthetic": _metrics(0.70, 0.6)}, "ocsvm": {"synthetic": _metrics(0.75, 0.4)},
              "clinical": {"synthetic": _metrics(0.75, 0.3)}}


def test_choose_by_the_primary_metric_ties_go_to_the_first_candidate():
    assert choose(EVALUATION, ["iforest", "ocsvm", "clinical"], "events.event_f1") == ("ocsvm", 0.75)
    assert choose(EVALUATION, ["clinical", "ocsvm"], "events.event_f1") == ("clinical", 0.75)
    assert choose(EVALUATION, ["iforest", "ocsvm"], "point.auprc") == ("iforest", 0.6)
    with pytest.raises(KeyError, match=r"\['lstm_ae'\] have no metrics"):
        choose(EVALUATION, ["iforest", "lstm_ae"], "events.event_f1")


def test_a_candidate_without_the_metric_cannot_be_chosen():
    evaluation = {**EVALUATION, "lstm_ae": {"synthetic": {"events": {"event_precision": None}}}}
    assert choose(evaluation, ["lstm_ae", "iforest"], "events.event_precision") == ("iforest", 0.9)
    with pytest.raises(ValueError, match="no candidate"):
        choose(evaluation, ["lstm_ae"], "events.event_precision")


def test_metric_paths_must_name_a_number():
    assert metric_at(_metrics(0.5), "events.event_f1") == 0.5
    with pytest.raises(KeyError, match="no 'f2'"):
        metric_at(_metrics(0.5), "events.f2")
    with pytest.raises(ValueError, match="not a number"):
        metric_at({"events": {"event_f1": math.nan}}, "events.event_f1")
    with pytest.raises(ValueError, match="not a number"):
        metric_at(_metrics(0.5), "events.recall_by_kind")


def test_decide_never_promotes_a_worse_or_equal_model():
    assert decide(0.7, None, 0.0) == (True, "no champion yet")
    assert decide(0.71, 0.70, 0.0)[0] is True
    assert decide(0.70, 0.70, 0.0)[0] is False, "a tie keeps the champion"
    assert decide(0.69, 0.70, 0.0)[0] is False
    assert decide(0.705, 0.70, 0.01)[0] is False, "not better by more than the margin"
    assert "does not beat" in decide(0.6, 0.7, 0.0)[1]


def test_fingerprint_follows_the_bundle_bytes_and_metrics(tmp_path):
    (tmp_path / "detector").mkdir()
    (tmp_path / "detector" / "model.bin").write_bytes(b"abc")
    a = fingerprint(tmp_path, "iforest", _metrics(0.7))
    assert a == fingerprint(tmp_path, "iforest", _metrics(0.7))
    assert a != fingerprint(tmp_path, "iforest", _metrics(0.71))
    assert a != fingerprint(tmp_path, "ocsvm", _metrics(0.7))
    (tmp_path / "detector" / "model.bin").write_bytes(b"abd")
    assert a != fingerprint(tmp_path, "iforest", _metrics(0.7))


def _classed(recall_by_kind: dict, fa: float, wf1: float = 0.8) -> dict:
    cls = {"event_f1": wf1, "weighted_f1": wf1, "event_recall": 0.6, "event_precision": 0.9,
           "false_alarms_per_hour": fa, "median_delay_s": 30.0, "recall_by_kind": recall_by_kind}
    return {"physiological": cls, "technical": {**cls, "recall_by_kind": {}}, "point": {"auroc": 0.8, "auprc": 0.5},
            "rule_events": {"recall": 1.0, "alarms_per_hour": 1.2, "auroc": 0.95}}


KINDS = ("hypotension", "tachycardia", "desaturation", "bradycardia")
RULES = _classed({"hypotension": 1.0, "tachycardia": 1.0, "desaturation": 0.5, "drift": 0.0}, 0.4, 0.7)


def test_safety_floor_per_clinical_kind_and_false_alarms():
    safe = safety_check(_classed({"hypotension": 1.0, "tachycardia": 1.0, "desaturation": 0.5, "drift": 1.0}, 0.1),
                        RULES, KINDS, 0.0, "clinical")
    assert safe.passed and safe.kinds["hypotension"] == {"challenger": 1.0, "baseline": 1.0, "ok": True}
    assert safe.kinds["bradycardia"]["ok"], "a kind without test events passes"
    assert "drift" not in safe.kinds, "only the clinical kinds of configs/alarms.yaml are floors"
    misses = safety_check(_classed({"hypotension": 0.5, "tachycardia": 1.0, "desaturation": 1.0}, 0.1, 0.99),
                          RULES, KINDS, 0.0, "clinical")
    assert not misses.passed and misses.failures() == ["hypotension: recall 0.500 < 1.000"]
    assert safety_check(_classed({"hypotension": 0.5, "tachycardia": 1.0, "desaturation": 1.0}, 0.1), RULES, KINDS,
                        0.5, "clinical").passed, "within the margin"
    noisy = safety_check(_classed({"hypotension": 1.0, "tachycardia": 1.0, "desaturation": 1.0}, 0.5), RULES, KINDS,
                         0.0, "clinical")
    assert not noisy.passed and noisy.failures() == ["physiological false alarms 0.50/h > 0.40/h"]
    silent = safety_check(_classed({}, 0.0), RULES, KINDS, 0.0, "clinical")
    assert not silent.passed and silent.kinds["hypotension"]["challenger"] == 0.0
    # never promoted, whatever its metric
    promote, reason = decide(0.99, 0.5, 0.0, misses)
    assert not promote and "fails the safety floor against clinical (hypotension: recall 0.500 < 1.000)" in reason
    assert decide(0.99, 0.5, 0.0, safe)[0]


def test_choose_prefers_the_best_safe_candidate():
    evaluation = {"ocsvm": {"synthetic": _classed({}, 0.0, 0.95)}, "iforest": {"synthetic": _classed({}, 0.0, 0.9)},
                  "clinical": {"synthetic": RULES}}
    metric = "physiological.weighted_f1"
    assert choose(evaluation, ["ocsvm", "iforest", "clinical"], metric, safe={"ocsvm": False, "iforest": True,
                                                                                "clinical": True}) == ("iforest", 0.9)
    assert choose(evaluation, ["ocsvm", "iforest"], metric, safe={"ocsvm": False, "iforest": False}) == ("ocsvm", 0.95)


def test_model_card_states_data_metrics_safety_and_limits():
    metrics = _classed({"hypotension": 1.0, "drift": 0.25}, 0.1)
    safety = safety_check(metrics, RULES, KINDS, 0.0, "clinical")
    card = model_card("ocsvm", metrics, {"k": 3, "n": 5, "refractory_s": 120, "tolerance_s": 30},
                      {"patients": 48, "hours": 153.0, "test_patients": 10}, ["synthetic data only"], safety)
    for text in ("# ocsvm", "48 patients", "153.0 patient-hours", "| physiological | 0.800 | 0.800 |", "| technical |",
                 "3 of 5 s", "caught less than half the time on the test patients: drift", "synthetic data only",
                 "## Safety floor (against clinical: FAILED)", "| hypotension | 1.000 | 1.000 | yes |",
                 "| tachycardia | 0.000 | 1.000 | no |", "| physiological false alarms / h | 0.10 | 0.40 | yes |"):
        assert text in card, text
    silent = _classed({}, 0.0, 0.0)  # a detector that never alarmed: precision and delay are undefined
    silent["physiological"].update(event_precision=None, median_delay_s=float("nan"))
    card = model_card("lstm_ae", silent, {"k": 3, "n": 5, "refractory_s": 120, "tolerance_s": 30}, {}, [])
    assert "| physiological | 0.000 | 0.000 | 0.600 | n/a | 0.00 | n/a |" in card


def test_register_params_are_checked():
    good = {"model_name": "m", "source": "synthetic", "candidates": ["iforest"], "min_improvement": 0.0,
            "lock_timeout_s": 10, "lock_url": None,
            "safety": {"baseline": "clinical", "margin": 0.0, "real_sources": ["real"],
                                             "max_own_alarms_per_hour": 0.2}, "advisory_source": "real"}
    rp = section(RegisterParams, good, "params.yaml: register")
    assert rp.candidates == ("iforest",) and rp.lock_url is None
    assert (rp.baseline, rp.margin, rp.source) == ("clinical", 0.0, "synthetic")
    assert (rp.real_sources, rp.max_own_alarms_per_hour) == (("real",), 0.2)
    with pytest.raises(ConfigError, match="max_own_alarms_per_hour"):
        section(RegisterParams, {**good, "safety": {**good["safety"], "max_own_alarms_per_hour": -1}})
    with pytest.raises(ConfigError, match="candidates"):
        section(RegisterParams, {**good, "candidates": []})
    with pytest.raises(ConfigError, match="min_improvement"):
        section(RegisterParams, {**good, "min_improvement": -1})
    with pytest.raises(ConfigError, match="safety.margin"):
        section(RegisterParams, {**good, "safety": {**good["safety"], "margin": 1.5}})
    with pytest.raises(ConfigError, match="advisory_source"):
        section(RegisterParams, {**good, "advisory_source": "ward"})


def _real(own: float, recall: float = 1.0, alarms: float = 3.0) -> dict:
    """One detector's metrics on a real source, as `evaluate_scores` writes them."""
    return {"rule_events": {"recall": recall, "alarms_per_hour": alarms}, "physiological": {"alarms_per_hour": alarms},
            "own_alarms": {"alarms_per_hour": own}, "early_warning_auroc": 0.6}


def test_a_candidate_that_alarms_on_real_recordings_is_never_champion_and_the_floor_serves():
    """Issue 28: a learned model whose own alarms on real recordings exceed the budget fails the floor, whatever its
    synthetic metric; with no learned model passing, the floor alone (clinical) is chosen."""
    params = {"register": {"model_name": "m", "source": "synthetic", "candidates": ["lstm_ae", "iforest", "clinical"],
                           "min_improvement": 0.0, "lock_timeout_s": 10, "lock_url": None,
                           "safety": {"baseline": "clinical", "margin": 0.0, "real_sources": ["real", "vitaldb"],
                                      "max_own_alarms_per_hour": 0.2}, "advisory_source": "real"},
              "objective": {"metric": "physiological.weighted_f1", "other_weight": 0.5}}
    rp = section(RegisterParams, params["register"])
    good = _classed({"hypotension": 1.0, "tachycardia": 1.0, "desaturation": 0.5}, 0.1, 0.99)
    evaluation = {"lstm_ae": {"synthetic": good, "real": _real(7.2)},  # alarms at every recording start
                  "iforest": {"synthetic": _classed({"hypotension": 1.0, "tachycardia": 1.0, "desaturation": 0.5}, 0.1,
                                                    0.95), "real": _real(0.1, recall=0.5)},  # misses a rule event
                  "clinical": {"synthetic": RULES, "real": _real(0.0)}}
    checks = {c: safety_check(evaluation[c]["synthetic"], RULES, KINDS, 0.0, "clinical",
                              real_figures(evaluation, c, rp)) for c in rp.candidates}
    assert set(checks["lstm_ae"].real) == {"real"}, "a real source that was not evaluated is skipped"
    assert not checks["lstm_ae"].passed
    assert checks["lstm_ae"].failures() == ["real recordings: 7.20 own alarm episodes/h > budget 0.20/h"]
    assert checks["iforest"].failures() == ["real recordings: rule events caught 0.500 < 1.000"]
    assert checks["clinical"].passed
    chosen = choose(evaluation, rp.candidates, params["objective"]["metric"],
                    safe={c: k.passed for c, k in checks.items()})
    assert chosen[0] == "clinical"
    promote, reason = decide(0.99, 0.5, 0.0, checks["lstm_ae"])
    assert not promote and "7.20 own alarm episodes/h" in reason
    card = model_card("lstm_ae", good, {"k": 3, "n": 5, "refractory_s": 120, "tolerance_s": 30}, {}, [],
                      checks["lstm_ae"])
    assert "## Real recordings (against clinical, the floor alone)" in card
    assert "| real | 1.000 (1.000) | 3.00 (3.00) | 3.00 | 7.20 (0.20) | 0.600 | no |" in card
    assert real_check(_real(0.2), _real(0.0), 0.2)["ok"], "at the budget passes"


def test_the_model_card_says_which_candidate_advises_and_why():
    from biostream.tracking.registry import advisory_card

    a = {"new_onset_warned": 4, "new_onset": 10, "warned": 14, "events": 71, "median_lead_s": 326.0,
         "false_per_hour": 0.19, "time_under_advisory": 0.081}
    metrics = {"patients": 29, "hours": 58.8, "candidates": {"map_extrapolated": {"all": a}}}
    choice = {"source": "map_extrapolated", "type": "extrapolated", "decided_on": "real",
              "why": "no learned model beats the best baseline on real, so the baseline advises"}
    lines = "\n".join(advisory_card(choice, metrics))
    assert "Advises: **map_extrapolated** (extrapolated). no learned model beats the best baseline" in lines
    assert "| map_extrapolated | 4/10 | 14/71 | 326 s | 0.19 | 8.1% |" in lines
