"""The clinical-threshold baseline: the alarm rules of `configs/alarms.yaml`, scored continuously.

For each rule, the relative exceedance of its limit ((x - limit) / |limit| for ">", the opposite for "<")
is taken at its weakest over the rule's last `min_duration_s` seconds; the score is the largest over
rules. So score > 0 exactly when some rule has been violated for its whole minimum duration (a missing
second counts as not violated), as the monitor's alarm would fire, and the score ranks how far and how
long the limits are exceeded, which gives ROC and PR curves. Threshold 0 reproduces the rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.config import Configs
from biostream.models.detectors.base import BaseDetector, register

FLOOR = -1.0  # score when no rule can be evaluated (all missing)


def clinical_params(configs: Configs) -> dict[str, Any]:
    """The baseline's hyperparameters: the alarm rules and signal order of the configs."""
    rules = tuple(
        {"kind": r.kind, "signal": r.signal, "op": r.op, "threshold": r.threshold, "min_duration_s": r.min_duration_s}
        for r in configs.rules
    )
    return {"rules": rules, "signals": configs.signals.keys}


@register("clinical")
class ClinicalThresholdDetector(BaseDetector):
    input_view = "window"
    calibrated = False  # threshold 0 is the rules themselves
    explains = "signals"  # per signal, its rules' sustained exceedance (the score is the largest)
    explain_method = "per signal, its alarm rules' sustained relative exceedance (the score is the largest)"
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

    def _explain(self, X: np.ndarray) -> np.ndarray:
        """(n, S): per signal, the largest sustained relative exceedance of its rules (FLOOR if none)."""
        index = {s: i for i, s in enumerate(self.signals)}
        out = np.full((len(X), len(self.signals)), FLOOR)
        for rule in self.rules:
            i = index[rule["signal"]]
            d = int(rule["min_duration_s"])
            limit = float(rule["threshold"])
            x = X[:, i, -d:]
            exceed = (x - limit) if rule["op"] in (">", ">=") else (limit - x)
            exceed = exceed / max(abs(limit), 1e-9)
            out[:, i] = np.maximum(out[:, i], np.where(np.isnan(exceed), -np.inf, exceed).min(axis=1))
        return np.maximum(out, FLOOR)

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._explain(X).max(axis=1)

    def _save_state(self, folder: Path) -> None:  # the rules are the whole state (in detector.json)
        pass

    def _load_state(self, folder: Path) -> None:
        pass
