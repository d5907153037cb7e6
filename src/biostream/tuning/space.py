"""What a study searches and how: search spaces from `configs/search_spaces/` (`SearchSpace`) and
`params.yaml: tune` (`TuneParams`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError, load_yaml, require
from biostream.core.params import TuneParams  # noqa: F401 (params.yaml: its section)

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


