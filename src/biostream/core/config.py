"""Typed views of `configs/` (signals, alarm rules), and reading YAML (`params.yaml` itself is typed in
`biostream.core.params`).

Every value is read from its file; nothing here has a default for a key that a config or params owns.
A missing or malformed key raises `ConfigError` naming the file, the key and what is expected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from biostream.core.params import ConfigError, LabelParams, SplitParams  # noqa: F401 (re-exported)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found; run from the repository root or pass the right path")
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    """`mapping[key]`, or a ConfigError that names the file/section and the missing key."""
    if key not in mapping:
        raise ConfigError(f"{where}: missing key '{key}'")
    return mapping[key]


def as_range(value: Any, where: str) -> tuple[float, float]:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise ConfigError(f"{where}: expected [low, high], got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi:
        raise ConfigError(f"{where}: low {lo} is above high {hi}")
    return lo, hi


# --------------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrackAlias:
    """A device track mapped onto a canonical signal. `hold_s` > 0 marks an intermittent measurement."""

    track: str
    hold_s: int = 0


@dataclass(frozen=True)
class SignalSpec:
    key: str
    name: str
    label: str  # the short name on screens and in an advisory's reason (MAP, SpO2)
    unit: str
    valid: tuple[float, float]
    decimals: int
    tracks: tuple[TrackAlias, ...]


@dataclass(frozen=True)
class SignalCatalog:
    signals: tuple[SignalSpec, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(s.key for s in self.signals)

    def __getitem__(self, key: str) -> SignalSpec:
        for spec in self.signals:
            if spec.key == key:
                return spec
        raise KeyError(f"unknown signal '{key}'; known signals: {', '.join(self.keys)}")

    def all_tracks(self) -> tuple[str, ...]:
        return tuple(alias.track for spec in self.signals for alias in spec.tracks)


def load_signals(path: str | Path) -> SignalCatalog:
    raw = require(load_yaml(path), "signals", str(path))
    specs = []
    for key, body in raw.items():
        where = f"{path}: signals.{key}"
        aliases = []
        for entry in require(body, "tracks", where):
            if isinstance(entry, str):
                aliases.append(TrackAlias(entry))
            else:
                aliases.append(TrackAlias(str(require(entry, "track", where)), int(entry.get("hold_s", 0))))
        specs.append(
            SignalSpec(
                key=key,
                name=str(require(body, "name", where)),
                label=str(require(body, "label", where)),
                unit=str(require(body, "unit", where)),
                valid=as_range(require(body, "valid", where), f"{where}.valid"),
                decimals=int(require(body, "decimals", where)),
                tracks=tuple(aliases),
            )
        )
    return SignalCatalog(tuple(specs))


# --------------------------------------------------------------------------------------------------
# Alarm rules
# --------------------------------------------------------------------------------------------------

_OPS = (">", "<", ">=", "<=")


@dataclass(frozen=True)
class AlarmRule:
    """A bedside alarm rule (`configs/alarms.yaml`): `signal` `op` `threshold` for `min_duration_s` seconds. `unit`
    is one step of the rules' continuous score in the signal's unit; `weight` what a missed event costs."""

    kind: str
    signal: str
    op: str
    threshold: float
    min_duration_s: int
    source: str
    unit: float = 1.0
    weight: float = 1.0

    @property
    def above(self) -> bool:
        """True for an upper limit (`>`, `>=`)."""
        return self.op in (">", ">=")


def load_alarm_rules(path: str | Path, signals: SignalCatalog) -> tuple[AlarmRule, ...]:
    raw = require(load_yaml(path), "rules", str(path))
    rules: list[AlarmRule] = []
    for i, body in enumerate(raw):
        where = f"{path}: rules[{i}]"
        rule = AlarmRule(
            kind=str(require(body, "kind", where)),
            signal=str(require(body, "signal", where)),
            op=str(require(body, "op", where)),
            threshold=float(require(body, "threshold", where)),
            min_duration_s=int(require(body, "min_duration_s", where)),
            source=str(require(body, "source", where)),
            unit=float(require(body, "unit", where)),
            weight=float(require(body, "weight", where)),
        )
        if rule.signal not in signals.keys:
            raise ConfigError(f"{where}: signal '{rule.signal}' is not one of {', '.join(signals.keys)}")
        if rule.op not in _OPS:
            raise ConfigError(f"{where}: op '{rule.op}' must be one of {', '.join(_OPS)}")
        if rule.min_duration_s < 1:
            raise ConfigError(f"{where}: min_duration_s must be >= 1, got {rule.min_duration_s}")
        if rule.unit <= 0 or rule.weight <= 0:
            raise ConfigError(f"{where}: unit and weight must be > 0, got unit {rule.unit}, weight {rule.weight}")
        if rule.kind in {r.kind for r in rules}:
            raise ConfigError(f"{where}: kind '{rule.kind}' appears twice; kinds must be unique")
        rules.append(rule)
    return tuple(rules)


@dataclass(frozen=True)
class Configs:
    """The configs every dataset stage needs, loaded once by the stage's entry point."""

    signals: SignalCatalog
    rules: tuple[AlarmRule, ...]

    @classmethod
    def load(cls, signals_path: str | Path, alarms_path: str | Path) -> Configs:
        signals = load_signals(signals_path)
        return cls(signals=signals, rules=load_alarm_rules(alarms_path, signals))


def merge_profile(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, recursively for mappings; an override key unknown to `base`
    is an error (a typo in a profile must not pass silently)."""
    out = dict(base)
    for key, value in overrides.items():
        if key not in base:
            raise ConfigError(f"profile key '{key}' does not exist in params; known keys: {', '.join(base)}")
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            out[key] = merge_profile(base[key], value)
        else:
            out[key] = value
    return out
