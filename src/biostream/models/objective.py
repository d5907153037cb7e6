"""The objective: what a missed event of each kind costs, and the metric studies, thresholds and the registry
maximise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biostream.core.config import ConfigError, require


@dataclass(frozen=True)
class Objective:
    """`params.yaml: objective` with `configs/alarms.yaml`'s weights: what a missed event of each kind costs, and the
    metric that studies, thresholds and the registry maximise (a path into `evaluate_scores`' metrics)."""

    metric: str
    kind_weights: Mapping[str, float]
    other_weight: float  # a physiological kind no rule defines (a drift, a level shift)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], rules: Any) -> Objective:
        w = "params.yaml: objective"
        sec = require(params, "objective", "params.yaml")
        out = cls(str(require(sec, "metric", w)), {r.kind: float(r.weight) for r in rules},
                  float(require(sec, "other_weight", w)))
        if not out.metric.startswith(("physiological.", "technical.", "rule_events.", "point.")):
            raise ConfigError(f"{w}.metric: '{out.metric}' is not a path into the metrics (physiological.weighted_f1, "
                              "technical.event_f1, rule_events.recall, point.auprc, ...)")
        if out.other_weight < 0:
            raise ConfigError(f"{w}.other_weight: must be >= 0, got {out.other_weight}")
        return out

    def weight(self, kind: str) -> float:
        """The weight of an event kind ('a+b': the largest of its parts)."""
        return max(self.kind_weights.get(k, self.other_weight) for k in str(kind).split("+"))

    def value(self, metrics: Mapping[str, Any]) -> float:
        """The objective's value in a metrics dict (NaN when undefined)."""
        v: Any = metrics
        for key in self.metric.split("."):
            if not isinstance(v, Mapping) or key not in v:
                raise KeyError(f"objective.metric '{self.metric}' is not in the metrics (no '{key}')")
            v = v[key]
        return float("nan") if v is None else float(v)
