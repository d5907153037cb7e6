"""Threshold calibration: a separate step, re-runnable without retraining (as Merlion separates it).

* "alarm_rate": the score above which a target fraction of validation seconds would alarm;
* "best_f1": the threshold with the best per-second F1 against validation labels;
* "best_event_f1": the threshold with the best event-level F1 after alarm post-processing (needs the
  validation events: `biostream.tuning.calibrate_on_validation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve

from biostream.config import ConfigError, require

METHODS = ("alarm_rate", "best_f1", "best_event_f1")


@dataclass(frozen=True)
class ThresholdParams:
    method: str
    target_alarm_rate: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ThresholdParams:
        w = "params.yaml: threshold"
        sec = require(params, "threshold", "params.yaml")
        out = cls(str(require(sec, "method", w)), float(require(sec, "target_alarm_rate", w)))
        if out.method not in METHODS:
            raise ConfigError(f"{w}.method: '{out.method}' is not one of {METHODS}")
        if not 0 < out.target_alarm_rate < 1:
            raise ConfigError(f"{w}.target_alarm_rate: must be in (0, 1), got {out.target_alarm_rate}")
        return out


def calibrate(scores: np.ndarray, labels: np.ndarray | None, params: ThresholdParams) -> float:
    """The threshold for `scores` (validation seconds) by the configured method."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("cannot calibrate a threshold on zero validation scores")
    if params.method == "best_event_f1":
        raise ValueError("best_event_f1 needs validation events: use biostream.tuning.calibrate_on_validation")
    if params.method == "alarm_rate":
        return float(np.quantile(scores, 1.0 - params.target_alarm_rate))
    if labels is None or not np.any(labels) or np.all(labels):
        raise ValueError("best_f1 calibration needs validation labels with both classes")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    # alarm when score > threshold: step just below the chosen score
    return float(np.nextafter(thresholds[best], -np.inf))
