"""Threshold calibration of the whole alarm system (detector + floor + policy) on hand-made validation patients."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import ConfigError
from biostream.core.params import section
from biostream.models.alarms import AlarmPolicy
from biostream.models.calibration import (
    OwnAlarmCap,
    ThresholdParams,
    Validation,
    calibrate_on_validation,
    candidates,
)
from biostream.models.floor import Combination, FloorView
from biostream.models.objective import Objective

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
    t = calibrate_on_validation(scores, val, rules_only(), ("map",), POLICY,
                                ThresholdParams("alarm_rate", 0.05, None, float("inf")), OBJECTIVE)
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
    tp = ThresholdParams("best_objective", 0.01, None, float("inf"))
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
    good = {"method": "best_objective", "target_alarm_rate": 0.01, "real_source": "real",
            "max_own_alarms_per_hour": 0.1}
    assert section(ThresholdParams, good) == ThresholdParams("best_objective", 0.01, "real", 0.1)
    with pytest.raises(ConfigError, match="method: Input should be 'best_objective' or 'alarm_rate'"):
        section(ThresholdParams, {**good, "method": "youden"})
    with pytest.raises(ConfigError, match="target_alarm_rate: Input should be less than 1"):
        section(ThresholdParams, {**good, "method": "alarm_rate", "target_alarm_rate": 2})
    with pytest.raises(ConfigError, match="max_own_alarms_per_hour: Input should be greater than or equal to 0"):
        section(ThresholdParams, {**good, "max_own_alarms_per_hour": -1})
    with pytest.raises(ConfigError, match="real_source: missing"):
        section(ThresholdParams, {"method": "best_objective", "target_alarm_rate": 0.01,
                                  "max_own_alarms_per_hour": 0.1})


def test_real_recordings_cap_the_threshold_above_their_own_alarms_and_keep_what_only_the_model_sees():
    """A model sees a strong (+8) and a weak (+4) synthetic drift, and alarms at the start of a real recording (+6)
    where the floor is quiet. Uncapped, its threshold catches both drifts and adds that real alarm; capped at 0 own
    alarms per hour there, the threshold rises above 6: the strong drift is still caught, the weak one is the price.
    A second with no learned score (-inf) is never a candidate; a cap nothing meets leaves the floor alone."""
    n = 3000
    rng = np.random.default_rng(1)
    rules = np.full(n, -2.0)
    rules[500:600] = 1.0
    learned = rng.normal(0, 0.5, n)
    learned[1500:1700] += 8
    learned[2300:2500] += 4
    learned[:300] = -np.inf  # a new recording: no learned score yet
    val = validation(rules, [(500, 600, "hypotension"), (1500, 1700, "drift"), (2300, 2500, "level_shift")])
    real_learned = rng.normal(0, 0.5, 3600)
    real_learned[1000:1100] += 6  # a real patient's stretch the model finds odd
    real_rows = pd.DataFrame({"patient_id": "r", "time_s": np.arange(3600)})
    tp = ThresholdParams("best_objective", 0.01, None, float("inf"))
    comb, signals = rules_only(), ("map",)
    open_thr = calibrate_on_validation(learned, val, comb, signals, POLICY, tp, OBJECTIVE)
    cap = OwnAlarmCap(real_rows, real_learned, FloorView(np.full((3600, 1), -2.0), None), 0.0)
    assert open_thr < 6 and cap.own_per_hour(open_thr, comb, signals, POLICY) == 1.0, "uncapped: one own alarm in 1 h"
    capped = calibrate_on_validation(learned, val, comb, signals, POLICY, tp, OBJECTIVE, cap)
    assert capped > 6 and cap.own_per_hour(capped, comb, signals, POLICY) == 0.0
    m = val.metrics(val.outputs(learned, capped, comb, signals), POLICY, OBJECTIVE)["physiological"]
    assert m["recall_by_kind"] == {"drift": 1.0, "hypotension": 1.0, "level_shift": 0.0} and m["false_alarms"] == 0
    never = OwnAlarmCap(real_rows, np.full(3600, 50.0), FloorView(np.full((3600, 1), -2.0), None), 0.0)
    assert calibrate_on_validation(learned, val, comb, signals, POLICY, tp, OBJECTIVE, never) == np.inf
    assert calibrate_on_validation(np.full(n, -np.inf), val, comb, signals, POLICY, tp, OBJECTIVE) == np.inf
