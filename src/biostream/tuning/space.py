"""What a study searches and how: search spaces from `configs/search_spaces/` (`SearchSpace`) and
`params.yaml: tune` (`TuneParams`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError, load_yaml, require

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


def decode(params: Mapping[str, Any]) -> dict[str, Any]:
    """Search-space values -> constructor values ('a+b' feature groups -> ('a', 'b'))."""
    out = dict(params)
    if isinstance(out.get("feature_groups"), str):
        out["feature_groups"] = tuple(out["feature_groups"].split("+"))
    return out


@dataclass(frozen=True)
class TuneParams:
    """`params.yaml: tune` (what a study maximises is `params.yaml: objective`)."""

    n_trials: Mapping[str, int]
    timeout_s: float
    seed: int
    storage: str
    workers: int = 1  # processes of the DVC stage's study (more can join from other machines: docs/scaling-out.md)
    heartbeat_s: float = 10.0  # a running trial's heartbeat; a trial silent for grace_s is failed and re-queued
    grace_s: float = 60.0
    max_retry: int = 3  # re-queues of one trial whose worker died

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TuneParams:
        w = "params.yaml: tune"
        sec = require(params, "tune", "params.yaml")
        out = cls(
            n_trials={str(k): int(v) for k, v in require(sec, "n_trials", w).items()},
            timeout_s=float(require(sec, "timeout_s", w)),
            seed=int(require(sec, "seed", w)),
            storage=str(require(sec, "storage", w)),
            workers=int(sec.get("workers", cls.workers)),
            heartbeat_s=float(sec.get("heartbeat_s", cls.heartbeat_s)),
            grace_s=float(sec.get("grace_s", cls.grace_s)),
            max_retry=int(sec.get("max_retry", cls.max_retry)),
        )
        if any(n < 1 for n in out.n_trials.values()):
            raise ConfigError(f"{w}.n_trials: every detector needs at least 1 trial, got {dict(out.n_trials)}")
        if out.workers < 1:
            raise ConfigError(f"{w}.workers: at least 1 worker process, got {out.workers}")
        if not 0 < out.heartbeat_s < out.grace_s:
            raise ConfigError(f"{w}: heartbeat_s ({out.heartbeat_s:g}) must be above 0 and below grace_s "
                              f"({out.grace_s:g}), or a live worker's trial would be failed as dead")
        if out.max_retry < 0:
            raise ConfigError(f"{w}.max_retry: 0 or more, got {out.max_retry}")
        if out.workers > 1 and out.storage.startswith("sqlite"):
            raise ConfigError(f"{w}.workers is {out.workers} but tune.storage is {out.storage}: several workers "
                              "need a database server (tune.storage: postgresql://user@host/db; docs/scaling-out.md); "
                              "sqlite serialises their writes and cannot be reached from another machine")
        return out
