"""Hyperparameter search: search spaces from `configs/search_spaces/`, the validation objective, and the
threshold the objective is measured at.

Pure pieces for the `tune` stage (`pipelines/tune.py` wires them to Optuna storage and MLflow runs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biostream.config import ConfigError, load_yaml, require
from biostream.dataset import read_dataset
from biostream.detectors.thresholds import ThresholdParams, calibrate
from biostream.evaluation import (
    AlarmPolicy,
    alarm_episodes,
    apply_policy,
    event_metrics,
    second_labels,
    second_metrics,
)
from biostream.features import InputPipeline
from biostream.labels import segment_starts

OBJECTIVES = ("event_f1", "auprc", "auroc")
_TYPES = ("int", "float", "categorical")


@dataclass(frozen=True)
class SearchSpace:
    """{hyperparameter: spec}; categorical `feature_groups` choices are groups joined by '+'."""

    specs: Mapping[str, Mapping[str, Any]]

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        raw = load_yaml(path)
        for name, spec in raw.items():
            where = f"{path}: {name}"
            kind = require(spec, "type", where)
            if kind not in _TYPES:
                raise ConfigError(f"{where}.type: '{kind}' is not one of {_TYPES}")
            if kind == "categorical":
                choices = require(spec, "choices", where)
                if not choices or not all(isinstance(c, str | int | float | bool) for c in choices):
                    raise ConfigError(f"{where}.choices: a non-empty list of strings or numbers")
            elif float(require(spec, "low", where)) > float(require(spec, "high", where)):
                raise ConfigError(f"{where}: low is above high")
        return cls(raw)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Hyperparameters for an Optuna trial, decoded for the detector's constructor."""
        out: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if spec["type"] == "int":
                out[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                              log=bool(spec.get("log", False)))
            elif spec["type"] == "float":
                out[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]),
                                                log=bool(spec.get("log", False)))
            else:
                out[name] = trial.suggest_categorical(name, list(spec["choices"]))
        return decode(out)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(self.specs, sort_keys=True).encode()).hexdigest()[:10]


def decode(params: Mapping[str, Any]) -> dict[str, Any]:
    """Search-space values -> constructor values ('a+b' feature groups -> ('a', 'b'))."""
    out = dict(params)
    if isinstance(out.get("feature_groups"), str):
        out["feature_groups"] = tuple(out["feature_groups"].split("+"))
    return out


@dataclass(frozen=True)
class TuneParams:
    """`params.yaml: tune`."""

    objective: str
    n_trials: Mapping[str, int]
    timeout_s: float
    seed: int
    storage: str
    include_artefacts: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TuneParams:
        w = "params.yaml: tune"
        sec = require(params, "tune", "params.yaml")
        out = cls(
            objective=str(require(sec, "objective", w)),
            n_trials={str(k): int(v) for k, v in require(sec, "n_trials", w).items()},
            timeout_s=float(require(sec, "timeout_s", w)),
            seed=int(require(sec, "seed", w)),
            storage=str(require(sec, "storage", w)),
            include_artefacts=bool(require(sec, "include_artefacts", w)),
        )
        if out.objective not in OBJECTIVES:
            raise ConfigError(f"{w}.objective: '{out.objective}' is not one of {OBJECTIVES}")
        return out


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


@dataclass
class StudyData:
    """What `tune` and `train` read: the input pipeline, the raw vitals (for sequence and window views), the
    normal training rows (no anomaly, no artefact) and the validation patients."""

    pipeline: InputPipeline
    vitals: pd.DataFrame
    train: pd.DataFrame
    val: Validation

    @classmethod
    def load(cls, features: str | Path, synthetic: str | Path) -> StudyData:
        features = Path(features)
        pipeline = InputPipeline.from_dict(json.loads((features / "input_pipeline.json").read_text()))
        table = pd.read_parquet(features / "synthetic.parquet")
        ds = read_dataset(synthetic)
        train = table[(table["split"] == "train") & (table["label"] == 0) & (table["artefact"] == 0)]
        val_rows = table[table["split"] == "val"].reset_index(drop=True)
        events = ds.events[ds.events["patient_id"].isin(val_rows["patient_id"].unique())]
        return cls(pipeline, ds.vitals, train, Validation(val_rows, events))


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
