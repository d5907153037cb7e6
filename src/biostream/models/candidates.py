"""`configs/advisories.yaml`, typed: the advisory candidates (each a scorer of `biostream.models.advisory`), the
policy advisory episodes are made with, and the forward evaluation's definitions and budget
(`biostream.models.forward`). Loaded once and checked against the alarm rules: every kind a candidate names is a
rule's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from biostream.core.config import AlarmRule, load_yaml
from biostream.core.params import STRICT, AlarmPolicy, ConfigError, Count, Fraction, Positive, PositiveFloat

ALL = "all"  # a candidate's `kinds`: every rule kind
ANY = "any"  # the kind of an advisory that names no rule (a learned score): it warns of an event of any kind


@dataclass(frozen=True)
class GreyZone:
    __pydantic_config__ = STRICT

    kind: str
    low: float
    high: float
    horizon_s: Positive


@dataclass(frozen=True)
class Evaluation:
    """`evaluation`: the forward evaluation's definitions (`biostream.models.forward`)."""

    __pydantic_config__ = STRICT

    lead_s: Count
    false_after_s: Count
    new_onset_s: Count
    horizons_s: tuple[Positive, ...]
    grey_zone: GreyZone
    bootstrap_resamples: Count
    seed: int
    false_per_hour: PositiveFloat
    time_under_advisory: Fraction

    @property
    def budget(self) -> dict[str, float]:
        """The advisory budget: false advisory episodes per patient-hour and time under advisory, at most."""
        return {"false_per_hour": self.false_per_hour, "time_under_advisory": self.time_under_advisory}

    def within(self, summary: dict) -> bool:
        """Whether a candidate's figures (`Judged.summary`) are within the advisory budget."""
        return all((summary[k] or 0.0) <= limit for k, limit in self.budget.items())


@dataclass(frozen=True)
class Episodes:
    """`episodes`: the alarm policy advisories are made with (k of n seconds > 0, refractory merge)."""

    __pydantic_config__ = STRICT

    k: Positive
    n: Positive
    refractory_s: Count

    @property
    def policy(self) -> AlarmPolicy:
        return AlarmPolicy(self.k, self.n, self.refractory_s, tolerance_s=0)


@dataclass(frozen=True)
class Named:
    """What every candidate has: its name in the tables and the registry, and where it comes from."""

    __pydantic_config__ = STRICT

    name: str
    source: str


@dataclass(frozen=True)
class Current(Named):
    type: Literal["current"]
    kinds: Literal["all"] | tuple[str, ...] = ALL


@dataclass(frozen=True)
class Raised(Named):
    type: Literal["raised"]
    limits: dict[str, float]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.limits)


@dataclass(frozen=True)
class Extrapolated(Named):
    type: Literal["extrapolated"]
    fit_s: Positive
    ahead_s: Positive
    min_fraction: Fraction
    kinds: Literal["all"] | tuple[str, ...] = ALL


@dataclass(frozen=True)
class Personalised(Named):
    type: Literal["personalised"]
    k: PositiveFloat
    history_s: Positive
    min_seen_s: Positive
    kinds: Literal["all"] | tuple[str, ...] = ALL


@dataclass(frozen=True)
class Gated(Named):
    type: Literal["gated"]
    limits: dict[str, float]
    towards: dict[str, float]  # per kind, the change (the signal's unit) over fit_s towards the rule's limit ...
    fit_s: Positive       # ... of the least-squares line over the last fit_s that opens the gate,
    recent_s: Positive    # or the value beyond the rule's own limit within the last recent_s
    min_fraction: Fraction

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.limits)


Candidate = Annotated[Current | Raised | Extrapolated | Personalised | Gated, Field(discriminator="type")]


@dataclass(frozen=True)
class Advisories:
    """`configs/advisories.yaml`, checked against the alarm rules (every kind a candidate names is a rule's)."""

    __pydantic_config__ = STRICT

    episodes: Episodes
    evaluation: Evaluation
    candidates: tuple[Candidate, ...]

    @classmethod
    def load(cls, path: str | Path, rules: tuple[AlarmRule, ...]) -> Advisories:
        try:
            out = TypeAdapter(cls).validate_python(load_yaml(path))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{path}: {problems}") from None
        known = {r.kind for r in rules}
        names = [c.name for c in out.candidates]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}: candidate names repeat: {names}")
        for c in out.candidates:
            unknown = sorted(set(kinds_of(c, rules)) - known) if c.kinds != ALL else []
            if unknown:
                raise ConfigError(f"{path}: candidate '{c.name}' names {unknown}, which are no rule kind of "
                                  f"configs/alarms.yaml ({sorted(known)})")
        for c in out.candidates:
            if isinstance(c, Gated) and set(c.towards) != set(c.limits):
                raise ConfigError(f"{path}: candidate '{c.name}': `towards` names {sorted(c.towards)} and `limits` "
                                  f"{sorted(c.limits)}; give both for the same rule kinds")
        if out.evaluation.grey_zone.kind not in known:
            raise ConfigError(f"{path}: evaluation.grey_zone.kind '{out.evaluation.grey_zone.kind}' is no rule kind")
        return out

    def candidate(self, name: str) -> Candidate:
        for c in self.candidates:
            if c.name == name:
                return c
        names = [c.name for c in self.candidates]
        raise KeyError(f"no advisory candidate '{name}'; configs/advisories.yaml has {names}")


def kinds_of(candidate: Candidate, rules: tuple[AlarmRule, ...]) -> tuple[str, ...]:
    kinds = candidate.kinds
    return tuple(r.kind for r in rules) if kinds == ALL else tuple(kinds)
