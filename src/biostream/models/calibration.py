"""Threshold calibration on validation patients: a separate step, re-runnable without retraining (as Merlion
separates it), of the whole alarm system: the detector's threshold is chosen with the safety floor, the technical
classes and the alarm policy in place (`biostream.models.floor`), so what it maximises is what the bundle does.

`calibrate_on_validation` chooses it (`params.yaml: threshold`), among thresholds that real monitoring data can live
with (`OwnAlarmCap`). `Validation` scores alarms on the validation patients the way `evaluate` scores test patients;
`validation_metrics` is what a study's trial and `train` log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.params import ThresholdParams  # noqa: F401 (params.yaml: its section)
from biostream.data.labels import segment_starts
from biostream.data.schema import PHYSIOLOGICAL
from biostream.models.alarms import AlarmPolicy, class_alarms
from biostream.models.floor import Combination, FloorView, Outputs, combine
from biostream.models.metrics import class_metrics, own_alarm_metrics, second_metrics
from biostream.models.objective import Objective

METHODS = ("best_objective", "alarm_rate")
CANDIDATES = 40  # upper quantiles of the validation scores tried by best_objective


@dataclass
class OwnAlarmCap:
    """Real recordings' seconds (every second of whole recordings), a detector's learned scores of them, and the
    floor's view of them: a threshold is allowed only if the bundle's own alarm episodes there (those its floor
    alone would not raise, `own_alarm_metrics`) stay at or under `max_per_hour` per patient-hour."""

    rows: pd.DataFrame
    learned: np.ndarray
    floor: FloorView
    max_per_hour: float

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pid, t = self.rows["patient_id"].to_numpy(), self.rows["time_s"].to_numpy()
        return pid, t, segment_starts(pid, t)

    def own_per_hour(self, threshold: float, comb: Combination, signals: Sequence[str], policy: AlarmPolicy) -> float:
        if not np.isfinite(threshold):
            return 0.0
        out = combine(self.learned, threshold, comb, self.floor, signals)
        pid, t, breaks = self._grid
        alarms = class_alarms(pid, t, out, 0.0, policy, breaks)
        return own_alarm_metrics(pid, t, alarms, out.rules, policy, len(self.rows) / 3600.0, breaks)["alarms_per_hour"]

    def allows(self, threshold: float, comb: Combination, signals: Sequence[str], policy: AlarmPolicy) -> bool:
        return self.own_per_hour(threshold, comb, signals, policy) <= self.max_per_hour


@dataclass
class Validation:
    """Validation patients' feature rows (every second) and ground-truth events, with the floor's view of them
    (built once: every trial and every candidate threshold reuses it)."""

    rows: pd.DataFrame
    events: pd.DataFrame
    floor: FloorView

    @property
    def hours(self) -> float:
        return len(self.rows) / 3600.0

    @cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """patient_id, time_s and their segment starts: read once, as every trial scores the same rows at
        some forty thresholds."""
        pid, t = self.rows["patient_id"].to_numpy(), self.rows["time_s"].to_numpy()
        return pid, t, segment_starts(pid, t)

    def outputs(self, learned: np.ndarray | None, threshold: float, comb: Combination,
                signals: Sequence[str]) -> Outputs:
        return combine(learned, threshold, comb, self.floor, signals)

    def metrics(self, outputs: Outputs, policy: AlarmPolicy, objective: Objective, *,
                point: bool = True) -> dict[str, Any]:
        """Event metrics of each class and (`point`) the physiological per-second metrics at the bundle's threshold
        (0). The per-second ones sort every score twice (AUROC, AUPRC): a threshold search leaves them out unless
        the objective is one of them."""
        pid, t, breaks = self._grid
        alarms = class_alarms(pid, t, outputs, 0.0, policy, breaks)
        out = class_metrics(pid, t, alarms, self.events, self.hours, policy.tolerance_s, objective, breaks)
        if point:
            out["point"] = second_metrics(self.rows, outputs.score, alarms[PHYSIOLOGICAL])
        return out


def candidates(scores: np.ndarray, n: int = CANDIDATES) -> np.ndarray:
    """Candidate thresholds: upper quantiles of the scores, and +inf (the detector alarms on nothing)."""
    qs = 1.0 - np.geomspace(0.5, 0.0005, n)
    return np.r_[np.unique(np.quantile(np.asarray(scores, dtype=np.float64), qs)), np.inf]


def calibrate_on_validation(learned: np.ndarray, val: Validation, comb: Combination, signals: Sequence[str],
                            policy: AlarmPolicy, tp: ThresholdParams, objective: Objective,
                            cap: OwnAlarmCap | None = None) -> float:
    """The detector's threshold by `params.yaml: threshold.method`, on validation scores:

    * "best_objective": the candidate threshold (an upper quantile of the validation scores, or +inf: the learned
      model adds no alarm to the floor) with the best `objective.metric` (params.yaml: objective; by default the
      clinically weighted physiological event F1); among equals the highest (fewest alarms);
    * "alarm_rate": the score above which a target fraction of validation seconds would be (no floor needed).

    With a `cap` (`threshold.real_source`), only among thresholds whose own alarms on the cap's real recordings stay
    at or under `threshold.max_own_alarms_per_hour` (+inf always does: the floor alone): the synthetic world decides
    among thresholds that real monitoring data can live with."""
    learned = np.asarray(learned, dtype=np.float64)
    if learned.size == 0:
        raise ValueError("cannot calibrate a threshold on zero validation scores")
    scored = learned[np.isfinite(learned)]  # -inf: a second with no learned score (no signal read yet)
    if not scored.size:
        return float("inf")

    def allowed(thr: float) -> bool:
        return cap is None or cap.allows(thr, comb, signals, policy)

    if tp.method == "alarm_rate":
        at_rate = float(np.quantile(scored, 1.0 - tp.target_alarm_rate))
        return next((float(t) for t in np.r_[at_rate, candidates(scored)] if t >= at_rate and allowed(float(t))),
                    float("inf"))
    best_thr, best = float("inf"), -np.inf
    point = objective.metric.startswith("point.")
    for thr in candidates(scored)[::-1]:  # highest first: among equals the highest (fewest alarms) is kept
        value = objective.value(val.metrics(val.outputs(learned, float(thr), comb, signals), policy, objective,
                                            point=point))
        value = value if value == value else -1.0  # undefined (no event, no alarm) ranks last
        if value > best and allowed(float(thr)):
            best_thr, best = float(thr), value
    return best_thr


def validation_metrics(learned: np.ndarray | None, threshold: float, val: Validation, comb: Combination,
                       signals: Sequence[str], policy: AlarmPolicy, objective: Objective) -> dict[str, float]:
    """Flat metrics of validation scores at a threshold (what a trial and `train` log): each class's event numbers
    (`physiological.event_f1`, ...), the per-second ones (`point.auprc`), the threshold and the objective."""
    nested = val.metrics(val.outputs(learned, threshold, comb, signals), policy, objective)
    flat = {f"{cls}.{k}": float(v) for cls, m in nested.items() for k, v in m.items()
            if isinstance(v, int | float) and v is not None}
    return {**flat, "threshold": threshold, "objective": objective.value(nested)}
