"""The clinical-threshold baseline: the alarm rules of `configs/alarms.yaml`, scored continuously.

The score is the largest of the rules' scores (`rule_scores`): > 0 exactly when some rule has been violated for its
whole minimum duration (a missing second breaks the run), so threshold 0 reproduces the rules, and below 0 it ranks
seconds by how near a rule is to firing. The same score is every learned detector's safety floor
(`biostream.models.floor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.config import Configs
from biostream.models.detectors.base import BaseDetector, register

FLOOR = -10.0  # the lowest score (the rule's signal is missing now, or the value is that far from the limit)
PENDING = 0.5  # a value beyond the limit, not yet for the rule's duration, scores in (-PENDING, 0)


def clinical_params(configs: Configs) -> dict[str, Any]:
    """The baseline's hyperparameters: the alarm rules and signal order of the configs."""
    rules = tuple(
        {"kind": r.kind, "signal": r.signal, "op": r.op, "threshold": r.threshold, "min_duration_s": r.min_duration_s,
         "unit": r.unit}
        for r in configs.rules
    )
    return {"rules": rules, "signals": configs.signals.keys}


def rule_scores(X: np.ndarray, rules: Sequence[Mapping[str, Any]], signals: Sequence[str]) -> np.ndarray:
    """(n, rules) scores of raw windows (n, S, >= longest duration).

    Per rule, each second's exceedance of the limit is counted in the rule's `unit` (e = (x - limit) / unit for
    ">", the opposite for "<"; > 0 beyond the limit), and the run is how many of the last seconds, up to the rule's
    `min_duration_s` d, have been beyond it without a break. The rule's score is

    * when the run is d seconds (the rule fires, as the monitor's alarm with that delay would): the smallest
      exceedance over them, > 0, larger the further the limit is exceeded;
    * when the value is beyond the limit but not yet for d seconds: -PENDING * (1 - run / d), in (-PENDING, 0),
      nearer 0 the longer it has lasted (an event begins this way; a transient crossing ends this way);
    * otherwise: -PENDING + e (e <= 0 now), lower the further the value is from the limit; FLOOR when the value is
      missing (the rule cannot fire), and never below FLOOR.

    So it ranks seconds as the bedside sees them: a sustained exceedance above a current one, a current one above a
    value within the limits, a MAP of 66 above a MAP of 80; and only a sustained exceedance is above 0."""
    index = {s: i for i, s in enumerate(signals)}
    out = np.empty((len(X), len(rules)))
    for k, rule in enumerate(rules):
        d = int(rule["min_duration_s"])
        x = X[:, index[rule["signal"]], -d:]
        limit, unit = float(rule["threshold"]), float(rule.get("unit", abs(float(rule["threshold"])) or 1.0))
        e = (x - limit) / unit if rule["op"] in (">", ">=") else (limit - x) / unit
        with np.errstate(invalid="ignore"):
            beyond = {">": x > limit, ">=": x >= limit, "<": x < limit, "<=": x <= limit}[rule["op"]]
        run = np.cumprod(beyond[:, ::-1], axis=1).sum(axis=1)  # trailing seconds beyond the limit
        sustained = np.maximum(np.min(np.where(beyond, e, np.inf), axis=1), 1e-9)  # a rule on `>=` at its limit: > 0
        now = np.where(np.isnan(e[:, -1]), FLOOR, np.minimum(e[:, -1], 0.0))
        out[:, k] = np.where(run >= d, sustained, np.where(run > 0, -PENDING * (1.0 - run / d), -PENDING + now))
    return np.maximum(out, FLOOR)


@register("clinical")
class ClinicalThresholdDetector(BaseDetector):
    input_view = "window"
    calibrated = False  # threshold 0 is the rules themselves
    explains = "signals"  # per signal, its rules' score (the score is the largest)
    explain_method = ("per signal, its alarm rules' score: the sustained exceedance of the limit in the rule's unit "
                      "(> 0: the rule fires), or how near it is to firing (the score is the largest)")
    tunable = False  # the rules of configs/alarms.yaml are its whole definition

    @classmethod
    def training_params(cls, tuned: Mapping[str, Any] | None, configs: Configs) -> dict[str, Any]:
        return clinical_params(configs)

    def __init__(self, rules: Sequence[dict[str, Any]] = (), signals: Sequence[str] = ()):
        self.rules = rules
        self.signals = signals

    @property
    def reads_last_s(self) -> int | None:
        """Each rule reads its last `min_duration_s` seconds; the longest is all the score depends on."""
        return max((int(r["min_duration_s"]) for r in self.rules), default=None)

    def _fit(self, X: np.ndarray, **kwargs: Any) -> None:
        if not self.rules or not self.signals:
            raise ValueError("clinical baseline needs `rules` (configs/alarms.yaml) and `signals`")
        longest = max(int(r["min_duration_s"]) for r in self.rules)
        if X.shape[2] < longest:
            raise ValueError(f"windows of {X.shape[2]} s are shorter than the longest rule duration ({longest} s)")

    def fit(self, X: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> ClinicalThresholdDetector:
        super().fit(X, y, **kwargs)
        self.threshold_ = 0.0  # the rules themselves; calibration may move it
        return self

    def rule_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, rules) each rule's score of raw windows (the score is their largest)."""
        self._check_fitted()
        return rule_scores(self._check_input(X), self.rules, self.signals)

    def _explain(self, X: np.ndarray) -> np.ndarray:
        """(n, S): per signal, the largest score of its rules (FLOOR if it has none)."""
        per_rule = rule_scores(X, self.rules, self.signals)
        out = np.full((len(X), len(self.signals)), FLOOR)
        for k, rule in enumerate(self.rules):
            i = list(self.signals).index(rule["signal"])
            out[:, i] = np.maximum(out[:, i], per_rule[:, k])
        return out

    def _score(self, X: np.ndarray) -> np.ndarray:
        return rule_scores(X, self.rules, self.signals).max(axis=1)

    def _save_state(self, folder: Path) -> None:  # the rules are the whole state (in detector.json)
        pass

    def _load_state(self, folder: Path) -> None:
        pass
