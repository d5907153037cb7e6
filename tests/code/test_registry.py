"""Champion selection rules (the pure part of `biostream.tracking.registry`)."""

from __future__ import annotations

import math

import pytest

from biostream.core.config import ConfigError
from biostream.tracking.registry import RegisterParams, choose, decide, fingerprint, metric_at, model_card


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


def test_model_card_states_data_metrics_threshold_and_limits():
    card = model_card("ocsvm", _metrics(0.75), 0.0123, {"k": 3, "n": 5, "refractory_s": 120, "tolerance_s": 30},
                      {"patients": 48, "hours": 153.0, "test_patients": 10}, ["synthetic data only"])
    for text in ("# ocsvm", "48 patients", "153.0 patient-hours", "| 0.750 |", "Threshold 0.0123",
                 "3 of 5 s", "less than half the time on the test patients: drift", "synthetic data only"):
        assert text in card, text
    silent = _metrics(0.0)  # a detector that never alarmed: precision and delay are undefined
    silent["events"].update(event_precision=None, median_delay_s=float("nan"))
    card = model_card("lstm_ae", silent, 1.0, {"k": 3, "n": 5, "refractory_s": 120, "tolerance_s": 30}, {}, [])
    assert "| 0.000 | 0.600 | n/a | 0.10 | n/a | 0.800 | 0.500 |" in card


def test_register_params_are_checked():
    good = {"model_name": "m", "primary_metric": "events.event_f1", "candidates": ["iforest"],
            "min_improvement": 0.0, "lock_timeout_s": 10}
    assert RegisterParams.from_params({"register": good}).candidates == ("iforest",)
    with pytest.raises(ConfigError, match="candidates"):
        RegisterParams.from_params({"register": {**good, "candidates": []}})
    with pytest.raises(ConfigError, match="min_improvement"):
        RegisterParams.from_params({"register": {**good, "min_improvement": -1}})
