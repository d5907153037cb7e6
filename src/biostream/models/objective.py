"""The objective: what a missed event of each kind costs, and the metric studies, thresholds and the registry
maximise."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from biostream.core.config import AlarmRule
from biostream.core.params import ObjectiveParams  # noqa: F401 (params.yaml: its section)


@dataclass(frozen=True)
class Objective:
    """`params.yaml: objective` with `configs/alarms.yaml`'s weights: what a missed event of each kind costs, and the
    metric that studies, thresholds and the registry maximise (a path into `evaluate_scores`' metrics)."""

    metric: str
    kind_weights: Mapping[str, float]
    other_weight: float  # a physiological kind no rule defines (a drift, a level shift)

    @classmethod
    def of(cls, params: ObjectiveParams, rules: Iterable[AlarmRule]) -> Objective:
        """`params.yaml: objective` with the rules' weights."""
        return cls(params.metric, {r.kind: float(r.weight) for r in rules}, params.other_weight)

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
