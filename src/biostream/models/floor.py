"""The safety floor: how a learned detector's alarms keep everything the bedside rules catch, and say their class.

A bundle's score is S = max(R, L), on one scale for every detector, 0 at the alarm threshold: R the rules' score
(`biostream.models.detectors.clinical`), L the learned score (`learned_scale`). So with the same alarm policy a
floored detector alarms wherever the rules alarm, at least as early (tested); what a learned model adds is alarms of
its own. Each second above threshold has a class (`Outputs.technical`, `combine`); physiological and technical
alarms are then two streams (`biostream.models.alarms.class_alarms`). docs/clinical-safety.md#the-floor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.params import SafetyParams  # noqa: F401 (params.yaml: its section)
from biostream.features.pipeline import InputPipeline
from biostream.features.windows import windows_at
from biostream.models.detectors.clinical import ClinicalThresholdDetector
from biostream.models.technical import Flags, TechnicalChecks

CHUNK = 2048  # rows whose raw windows are built at once
NEVER = -1e6  # the lowest score a bundle gives: a second nothing can alarm on (scores stay finite)


@dataclass
class Combination:
    """What turns a detector's score into a bundle's: the learned score's scale, the rules (None: no floor), the
    technical checks (None: every alarm physiological), and the signals' highest possible values."""

    spread: float
    cap: float | None  # None: the learned score is not compressed (a bundle without a floor)
    rules: ClinicalThresholdDetector | None
    technical: TechnicalChecks | None
    valid_max: dict[str, float]

    @property
    def reads_s(self) -> int:
        """Seconds of raw history the floor reads: the rules' longest duration, the technical checks' context (0:
        neither)."""
        rules = int(self.rules.reads_last_s or 0) if self.rules is not None else 0
        return max(rules, self.technical.context_s if self.technical is not None else 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON of everything but the rules (saved as a detector of their own)."""
        return {"spread": self.spread, "cap": self.cap,
                "technical": None if self.technical is None else self.technical.to_dict(), "valid_max": self.valid_max}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], rules: ClinicalThresholdDetector | None) -> Combination:
        technical = None if d.get("technical") is None else TechnicalChecks.from_dict(d["technical"])
        return cls(float(d["spread"]), None if d.get("cap") is None else float(d["cap"]), rules, technical,
                   {k: float(v) for k, v in d.get("valid_max", {}).items()})

    @classmethod
    def plain(cls) -> Combination:
        """No floor, no technical checks: the score is the detector's minus its threshold (a bundle saved before
        the floor existed, or the rules' own bundle)."""
        return cls(1.0, None, None, None, {})


@dataclass(frozen=True)
class FloorView:
    """What the floor reads of some seconds, built once from their raw windows: each rule's score (n, rules) and
    the technical signatures (None without checks)."""

    rule_scores: np.ndarray
    flags: Flags | None

    def __len__(self) -> int:
        return len(self.rule_scores)


@dataclass(frozen=True)
class Outputs:
    """Per second: the bundle's score (> 0: above threshold), whether the rules drive it, its class (`technical`:
    of a second above threshold; False for every other), and the rules' own score (`rules`, > 0 where the floor
    alone would be above threshold; NEVER without a floor; the score itself for the rules' own bundle)."""

    score: np.ndarray
    rule_driven: np.ndarray
    technical: np.ndarray
    rules: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[Outputs]) -> Outputs:
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("score", "rule_driven", "technical", "rules")))


def floor_view(comb: Combination, windows: np.ndarray, signals: Sequence[str], *, flags: bool = True) -> FloorView:
    """The floor's view of raw windows (n, S, >= the rules' and checks' history); `flags=False`: the rules' scores
    only."""
    n = len(windows)
    rules = comb.rules.rule_scores(windows) if comb.rules is not None else np.empty((n, 0))
    checked = None if comb.technical is None or not flags else comb.technical.flags(windows, signals, comb.valid_max)
    return FloorView(rules, checked)


def outputs_of_windows(learned: np.ndarray | None, threshold: float, comb: Combination, windows: np.ndarray,
                       signals: Sequence[str]) -> Outputs:
    """`combine` on raw windows, with the technical checks run only on the windows above threshold (the only
    seconds a class is given to): the same outputs as `combine(..., floor_view(comb, windows, signals))`, and on a
    monitor's usual stream, where few windows alarm, a fraction of the work (tested)."""
    view = floor_view(comb, windows, signals, flags=False)
    out = combine(learned, threshold, comb, view, signals)
    above = np.flatnonzero(out.score > 0)
    if comb.technical is not None and len(above):
        part = FloorView(view.rule_scores[above], comb.technical.flags(windows[above], signals, comb.valid_max))
        out.technical[above] = combine(None if learned is None else learned[above], threshold, comb, part,
                                       signals).technical
    return out


def floor_key(comb: Combination, signals: Sequence[str]) -> str:
    """What a floor view depends on besides the seconds (the rules, the technical checks, the signals' limits): two
    bundles with the same key read the same floor view of the same rows (`evaluate` builds it once per source)."""
    rules = None if comb.rules is None else {"rules": list(comb.rules.rules), "signals": list(comb.rules.signals)}
    technical = None if comb.technical is None else comb.technical.to_dict()
    return json.dumps({"rules": rules, "technical": technical, "valid_max": comb.valid_max, "signals": list(signals)},
                      sort_keys=True, default=str)


def floor_view_of_rows(comb: Combination, pipeline: InputPipeline, rows: pd.DataFrame,
                       vitals: pd.DataFrame) -> FloorView:
    """`floor_view` of rows of a feature table, from their raw windows, chunk by chunk (built once per set of rows:
    it is the same for every detector)."""
    n_rules = len(comb.rules.rules) if comb.rules is not None else 0
    if not comb.reads_s or not len(rows):
        return FloorView(np.empty((len(rows), n_rules)), None)
    parts = []
    for i in range(0, len(rows), CHUNK):
        part = rows.iloc[i : i + CHUNK]
        windows = windows_at(vitals, pipeline.signals, comb.reads_s, part["patient_id"].to_numpy(),
                             part["time_s"].to_numpy())
        parts.append(floor_view(comb, windows, pipeline.signals))
    flags = None if parts[0].flags is None else Flags(**{
        f: np.concatenate([getattr(p.flags, f) for p in parts]) for f in Flags.__dataclass_fields__})
    return FloorView(np.concatenate([p.rule_scores for p in parts]), flags)


def learned_scale(scores: np.ndarray, threshold: float, spread: float, cap: float | None) -> np.ndarray:
    """A learned score on the bundle's scale: L = (s - threshold) / spread (`spread_of`), compressed above 0 to at
    most `cap` (cap * tanh(L / cap): a sustained rule exceedance outranks any learned score once it is `cap` units
    beyond its limit), and never below NEVER (a threshold of +inf, a detector calibrated to alarm on nothing, gives
    NEVER throughout)."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(threshold):
        return np.full(s.shape, NEVER)
    z = np.maximum((s - threshold) / spread, NEVER)
    return z if cap is None else np.where(z > 0, cap * np.tanh(z / cap), z)


def combine(learned: np.ndarray | None, threshold: float, comb: Combination, view: FloorView,
            signals: Sequence[str]) -> Outputs:
    """The bundle's outputs from a detector's scores (None: the rules alone) and the floor's view of the same
    seconds (what `comb` has no use for in the view is ignored: a view built once serves every combination).

    The score is the larger of the rules' and the learned one. A second above threshold is technical when its
    driving signal shows a signature of the measurement (`biostream.models.technical`): for a rule-driven second the
    rule's signal (`Flags.rule_technical`: a lower limit only on a frozen value, erratic readings or a probe gap), for
    a learned-driven second any signal (`Flags.any_signal`)."""
    n = len(view) if learned is None else len(learned)
    has_rules = comb.rules is not None and view.rule_scores.shape[1] > 0
    rules = view.rule_scores.max(axis=1) if has_rules else np.full(n, NEVER)
    if learned is None:
        score, rule_driven = rules, np.ones(n, dtype=bool)
    else:
        scaled = learned_scale(learned, threshold, comb.spread, comb.cap)
        rule_driven = has_rules & (rules >= scaled)
        score = np.where(rule_driven, rules, scaled)
    technical = np.zeros(n, dtype=bool)
    flags = view.flags if comb.technical is not None else None
    if flags is not None:
        if learned is not None:
            technical = flags.any_signal() & ~rule_driven
        if has_rules:
            which = view.rule_scores.argmax(axis=1)
            for k, rule in enumerate(comb.rules.rules):
                mine = rule_driven & (which == k)
                if mine.any():
                    demoted = flags.rule_technical(list(signals).index(rule["signal"]), rule["op"] in (">", ">="))
                    technical[mine] = demoted[mine]
    return Outputs(score, rule_driven, technical & (score > 0), rules)


def spread_of(train_scores: np.ndarray) -> float:
    """The learned score's unit: its normal training scores' 99th percentile minus their median."""
    q = np.quantile(np.asarray(train_scores, dtype=np.float64), [0.5, 0.99])
    return float(max(q[1] - q[0], 1e-9))
