"""Threshold calibration of the whole alarm system (detector + floor + policy) on hand-made validation patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import ConfigError
from biostream.features import feature_names
from biostream.models.calibration import ThresholdParams, Validation, calibrate_on_validation, candidates
from biostream.models.detectors import make_detector
from biostream.models.evaluation import AlarmPolicy, Objective
from biostream.models.floor import Combination, FloorView

POLICY = AlarmPolicy(k=3, n=5, refractory_s=0, tolerance_s=0)
OBJECTIVE = Objective("physiological.weighted_f1", {"hypotension": 3.0}, 0.5)


def validation(rule_scores: np.ndarray, events: list[tuple[int, int, str]]) -> Validation:
    n = len(rule_scores)
    rows = pd.DataFrame({"patient_id": "p", "time_s": np.arange(n), "label": 0, "artefact": 0})
    for a, b, _ in events:
        rows.loc[a : b - 1, "label"] = 1
    ev = pd.DataFrame({"patient_id": "p", "start_s": [a for a, _, _ in events], "end_s": [b for _, b, _ in events],
                       "kind": [k for _, _, k in events], "event_class": "physiological", "category": "clinical"})
    return Validation(rows, ev, FloorView(rule_scores[:, None], None))


def rules_only() -> Combination:
    """A combination whose floor is the given rule scores (no rules object is needed to combine them)."""
    class Rules:
        rules = ({"signal": "map", "op": "<"},)
    return Combination(1.0, 1.0, Rules(), None, {})


def test_alarm_rate_threshold():
    scores = np.arange(1000.0)
    val = validation(np.full(1000, -1.0), [])
    t = calibrate_on_validation(scores, val, rules_only(), ("map",), POLICY, ThresholdParams("alarm_rate", 0.05),
                                OBJECTIVE)
    assert np.mean(scores > t) == pytest.approx(0.05, abs=0.002)


def test_best_objective_adds_what_the_rules_miss_and_nothing_else():
    """The rules catch the hypotension; the detector alone sees the drift. The threshold that catches the drift
    without false alarms wins; when the detector sees nothing the rules do not, +inf (no alarm of its own) wins."""
    n = 3000
    rng = np.random.default_rng(0)
    rules = np.full(n, -2.0)
    rules[500:600] = 1.0  # the hypotension the rules catch
    learned = rng.normal(0, 1, n)
    learned[1500:1700] += 8  # a drift only the model sees
    val = validation(rules, [(500, 600, "hypotension"), (1500, 1700, "drift")])
    tp = ThresholdParams("best_objective", 0.01)
    thr = calibrate_on_validation(learned, val, rules_only(), ("map",), POLICY, tp, OBJECTIVE)
    m = val.metrics(val.outputs(learned, thr, rules_only(), ("map",)), POLICY, OBJECTIVE)["physiological"]
    assert np.isfinite(thr) and m["event_recall"] == 1.0 and m["false_alarms"] == 0
    blind = rng.normal(0, 1, n)  # sees neither: its alarms could only be false
    thr = calibrate_on_validation(blind, val, rules_only(), ("map",), POLICY, tp, OBJECTIVE)
    assert thr == np.inf
    m = val.metrics(val.outputs(blind, thr, rules_only(), ("map",)), POLICY, OBJECTIVE)["physiological"]
    assert m["events_by_kind"] == {"drift": 1, "hypotension": 1} and m["recall_by_kind"]["hypotension"] == 1.0
    assert m["false_alarms"] == 0
    assert candidates(np.arange(100.0))[-1] == np.inf


def test_params_are_checked():
    with pytest.raises(ConfigError, match="method: 'youden' is not one of"):
        ThresholdParams.from_params({"threshold": {"method": "youden", "target_alarm_rate": 0.01}})
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\)"):
        ThresholdParams.from_params({"threshold": {"method": "alarm_rate", "target_alarm_rate": 2}})


def test_calibrated_threshold_drives_predict():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (300, len(feature_names(("hr", "spo2"))))).astype(np.float32)
    det = make_detector("iforest", n_estimators=20).fit(X)
    provisional = det.threshold_
    assert np.mean(det.decision_function(X) > provisional) == pytest.approx(0.01, abs=0.005)
    det.set_threshold(float(np.quantile(det.decision_function(X), 0.8)))
    assert det.predict(X).mean() == pytest.approx(0.2, abs=0.01)
    det.set_threshold(np.inf)
    assert det.predict(X).sum() == 0
    with pytest.raises(ValueError, match="a number or \\+inf"):
        det.set_threshold(float("nan"))
