"""Threshold calibration on validation patients: a separate step, re-runnable without retraining (as Merlion
separates it).

* "alarm_rate": the score above which a target fraction of validation seconds would alarm;
* "best_f1": the threshold with the best per-second F1 against validation labels;
* "best_event_f1": the threshold with the best event-level F1 after alarm post-processing (needs the
  validation events: `calibrate_on_validation`).

`Validation` holds the validation patients' rows and events, and scores alarms on them the way `evaluate`
scores test patients; `validation_metrics` is what a study's trial and `train` log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from biostream.core.config import ConfigError, require
from biostream.data.labels import segment_starts
from biostream.models.evaluation import (
    AlarmPolicy,
    alarm_episodes,
    apply_policy,
    event_metrics,
    second_labels,
    second_metrics,
)

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
        raise ValueError("best_event_f1 needs validation events: use calibrate_on_validation")
    if params.method == "alarm_rate":
        return float(np.quantile(scores, 1.0 - params.target_alarm_rate))
    if labels is None or not np.any(labels) or np.all(labels):
        raise ValueError("best_f1 calibration needs validation labels with both classes")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))  # the last point has no threshold
    # alarm when score > threshold: step just below the chosen score
    return float(np.nextafter(thresholds[best], -np.inf))


@dataclass
class Validation:
    """Validation patients' feature rows (every second) and ground-truth events."""

    rows: pd.DataFrame
    events: pd.DataFrame

    @property
    def hours(self) -> float:
        return len(self.rows) / 3600.0

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """patient_id, time_s and their segment starts: read once, as every trial scores the same rows at
        some forty thresholds."""
        pid, t = self.rows["patient_id"].to_numpy(), self.rows["time_s"].to_numpy()
        return pid, t, segment_starts(pid, t)

    def alarms(self, scores: np.ndarray, threshold: float, policy: AlarmPolicy) -> np.ndarray:
        pid, t, breaks = self._grid
        return apply_policy(pid, t, scores, threshold, policy, breaks=breaks)

    def event_scores(self, scores: np.ndarray, threshold: float, policy: AlarmPolicy,
                     include_artefacts: bool) -> dict[str, Any]:
        pid, t, breaks = self._grid
        episodes = alarm_episodes(pid, t, self.alarms(scores, threshold, policy), breaks=breaks)
        return event_metrics(episodes, self.events, self.hours, policy.tolerance_s, include_artefacts)


def best_event_threshold(scores: np.ndarray, score_events: Callable[[float], dict[str, Any]],
                         candidates: int = 40) -> float:
    """The candidate threshold (upper quantiles of the scores) with the best event F1; among equals the
    highest (fewest alarms)."""
    qs = 1.0 - np.geomspace(0.5, 0.0005, candidates)
    best_thr, best_f1 = float(np.quantile(scores, qs[-1])), -1.0
    for thr in np.unique(np.quantile(scores, qs)):
        f1 = score_events(float(thr))["event_f1"]
        if f1 >= best_f1:
            best_thr, best_f1 = float(thr), f1
    return best_thr


def calibrate_on_validation(scores: np.ndarray, val: Validation, policy: AlarmPolicy, tp: ThresholdParams,
                            include_artefacts: bool) -> float:
    """The threshold by `params.yaml: threshold.method`, on validation scores."""
    if tp.method == "best_event_f1":
        return best_event_threshold(scores, lambda t: val.event_scores(scores, t, policy, include_artefacts))
    labels, counted = second_labels(val.rows, include_artefacts)
    return calibrate(scores[counted], labels[counted], tp)


def validation_metrics(scores: np.ndarray, val: Validation, threshold: float, policy: AlarmPolicy,
                       include_artefacts: bool) -> dict[str, float]:
    """Flat metrics of validation scores at a threshold (what a trial logs)."""
    ev = val.event_scores(scores, threshold, policy, include_artefacts)
    pt = second_metrics(val.rows, scores, val.alarms(scores, threshold, policy), include_artefacts)
    flat = {k: v for k, v in ev.items() if not isinstance(v, dict)}
    return {**flat, **pt, "threshold": threshold}


def artefacts_are_events(params: Mapping[str, Any]) -> bool:
    """`params.yaml: tune.include_artefacts`: whether artefacts are events to catch (for the study's objective and
    the threshold `train` calibrates alike)."""
    return bool(require(require(params, "tune", "params.yaml"), "include_artefacts", "params.yaml: tune"))
