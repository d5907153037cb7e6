"""Champion selection in the MLflow model registry.

The `register` stage picks the best detector of the `evaluate` stage by the primary metric, registers its
logged model as a new version of one registered model (or finds the version already registered from the
same bundle and metrics: re-running with identical inputs creates nothing), gives it the alias
`challenger`, and moves `champion` to it only if it beats the current champion **re-scored on today's
test patients with today's code** (a tie keeps the champion; a champion that cannot be re-scored is kept
and the decision says why). The whole read-compare-set runs under a lock, so two runs at once cannot both
promote, and an alias is one atomic call: never two champions, never a half-set alias.

These are the pure pieces (`RegisterParams`, `metric_at`, `choose`, `decide`, `fingerprint`, `model_card`,
`Decision`); the MLflow calls are `biostream.tracking.register`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError, require

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class RegisterParams:
    """`params.yaml: register`."""

    model_name: str
    primary_metric: str
    candidates: tuple[str, ...]
    min_improvement: float
    lock_timeout_s: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RegisterParams:
        w = "params.yaml: register"
        sec = require(params, "register", "params.yaml")
        out = cls(
            model_name=str(require(sec, "model_name", w)),
            primary_metric=str(require(sec, "primary_metric", w)),
            candidates=tuple(str(c) for c in require(sec, "candidates", w)),
            min_improvement=float(require(sec, "min_improvement", w)),
            lock_timeout_s=float(require(sec, "lock_timeout_s", w)),
        )
        if not out.candidates:
            raise ConfigError(f"{w}.candidates: name at least one detector")
        if out.min_improvement < 0:
            raise ConfigError(f"{w}.min_improvement: must be >= 0 (a tie always keeps the champion)")
        return out


def lookup(metrics: Mapping[str, Any], path: str) -> Any:
    """A value by dotted path ("events.event_f1") in one detector's metrics, as stored (None, NaN kept)."""
    value: Any = metrics
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(f"metric '{path}' not found (no '{key}'); see metrics/evaluate.json for the names")
        value = value[key]
    return value


def metric_at(metrics: Mapping[str, Any], path: str) -> float:
    """A metric by dotted path that must be a number; NaN/None -> error."""
    value = lookup(metrics, path)
    if value is None or not isinstance(value, int | float) or value != value:
        raise ValueError(f"metric '{path}' is {value!r}, not a number")
    return float(value)


def choose(evaluation: Mapping[str, Any], candidates: Sequence[str], metric: str,
           dataset: str = "synthetic") -> tuple[str, float]:
    """The candidate with the highest primary metric on the dataset (ties: the first in `candidates`)."""
    missing = [c for c in candidates if c not in evaluation]
    if missing:
        raise KeyError(f"register.candidates {missing} have no metrics in the evaluation; evaluated: "
                       f"{sorted(evaluation)}")
    scored = []
    for i, c in enumerate(candidates):
        try:
            scored.append((metric_at(evaluation[c][dataset], metric), -i, c))
        except ValueError:  # e.g. precision of a detector that never alarmed: it cannot be chosen
            continue
    if not scored:
        raise ValueError(f"no candidate among {list(candidates)} has a numeric '{metric}'")
    value, _, name = max(scored)
    return name, value


def fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    """A metric for the model card and tags: 'n/a' when it is undefined (None or NaN)."""
    if value is None or not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{value:{spec}}{unit}"


def decide(challenger: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """Promote the challenger? Only when there is no champion or it is strictly better by more than
    `min_improvement`; a tie keeps the champion."""
    if champion is None:
        return True, "no champion yet"
    if challenger > champion + min_improvement:
        return True, f"challenger {challenger:.4f} beats champion {champion:.4f} (margin {min_improvement:g})"
    return False, f"challenger {challenger:.4f} does not beat champion {champion:.4f} (margin {min_improvement:g})"


def fingerprint(bundle_dir: Path, detector: str, metrics: Mapping[str, Any]) -> str:
    """What makes a version: the bundle's bytes, the detector and its test metrics."""
    h = hashlib.sha256(detector.encode())
    for f in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        h.update(f.relative_to(bundle_dir).as_posix().encode())
        h.update(f.read_bytes())
    h.update(json.dumps(metrics, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_card(detector: str, metrics: Mapping[str, Any], threshold: float, policy: Mapping[str, Any],
               data: Mapping[str, Any], limits: Sequence[str]) -> str:
    """The registered version's description: what it is, on what data, how good, and what it misses."""
    ev, pt = metrics["events"], metrics["point"]
    missed = sorted(k for k, v in ev["recall_by_kind"].items() if v < 0.5)
    lines = [
        f"# {detector}: vital-sign anomaly detector (BioStream)",
        "",
        "Input: raw 1 Hz vital-sign windows (signals x window_s, NaN = missing); output: anomaly score, alarm, "
        "threshold. The feature pipeline travels with the model.",
        "",
        "## Data",
        f"- Synthetic cohort: {data.get('patients', '?')} patients, {data.get('hours', '?')} patient-hours, "
        "patient-level train/validation/test splits; threshold calibrated on validation patients, metrics on "
        f"the {data.get('test_patients', '?')} test patients.",
        f"- VitalDB cases evaluated: {data.get('vitaldb_cases', 'none')}.",
        "",
        "## Test metrics (synthetic test patients)",
        "| event F1 | event recall | event precision | false alarms / patient-hour | median delay | AUROC | AUPRC |",
        "|---|---|---|---|---|---|---|",
        f"| {fmt(ev['event_f1'])} | {fmt(ev['event_recall'])} | {fmt(ev['event_precision'])} | "
        f"{fmt(ev['false_alarms_per_hour'], '.2f')} | {fmt(ev['median_delay_s'], '.0f', ' s')} | "
        f"{fmt(pt['auroc'])} | {fmt(pt['auprc'])} |",
        "",
        f"Threshold {threshold:.6g}; alarm after {policy['k']} of {policy['n']} s above it, refractory "
        f"{policy['refractory_s']} s, event tolerance {policy['tolerance_s']} s.",
        "",
        "## Known limits",
        f"- Anomaly kinds caught less than half the time on the test patients: {', '.join(missed) or 'none'}.",
        *[f"- {x}" for x in limits],
    ]
    return "\n".join(lines)


@dataclass
class Decision:
    """What the register stage did and why (written to the DVC-tracked JSON and the version's tags)."""

    model_name: str
    detector: str
    challenger_version: str
    created: bool
    champion_before: str | None
    champion_after: str
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    fingerprint: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
