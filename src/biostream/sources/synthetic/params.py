"""What describes a synthetic patient and cohort: `params.yaml: generate` (`CohortParams`) and
`configs/synthetic.yaml` (`Physiology`, with one `AnomalySpec` per injectable kind)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.config import ConfigError, as_range, load_yaml, require

CATEGORIES = ("clinical", "statistical", "artefact")
CLASSES = ("physiological", "technical")  # what an event is to a clinician: the patient, or the measurement
BP_SIGNALS = ("sbp", "dbp", "map")
CLINICAL_KINDS = ("hypotension", "tachycardia", "bradycardia", "desaturation", "hypercapnia", "hyperthermia")
STATISTICAL_KINDS = ("spike", "level_shift", "drift", "flatline", "variance_burst")
ARTEFACT_KINDS = ("probe_off", "line_flush", "ecg_artefact")
# the signal a clinical episode is defined on (it must be monitored for the episode to be injected)
MAIN_SIGNAL = {
    "hypotension": "map",
    "tachycardia": "hr",
    "bradycardia": "hr",
    "desaturation": "spo2",
    "hypercapnia": "etco2",
    "hyperthermia": "temp",
}
TRANSIENT_SIGNALS = ("hr", "map", "spo2")  # where short limit crossings happen (Physiology.transients)


@dataclass(frozen=True)
class CohortParams:
    """`params.yaml: generate`."""

    seed: int
    n_patients: int
    hours: tuple[float, float]
    nibp_fraction: float
    warmup_s: int
    anomalies_per_hour: float
    artefacts_per_hour: float
    min_gap_s: int
    gaps_per_hour: float
    gap_s: tuple[float, float]
    absent_signal_probability: Mapping[str, float]

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CohortParams:
        where = "params.yaml: generate"
        sec = require(params, "generate", "params.yaml")
        out = cls(
            seed=int(require(sec, "seed", where)),
            n_patients=int(require(sec, "n_patients", where)),
            hours=as_range(require(sec, "hours", where), f"{where}.hours"),
            nibp_fraction=float(require(sec, "nibp_fraction", where)),
            warmup_s=int(require(sec, "warmup_s", where)),
            anomalies_per_hour=float(require(sec, "anomalies_per_hour", where)),
            artefacts_per_hour=float(require(sec, "artefacts_per_hour", where)),
            min_gap_s=int(require(sec, "min_gap_s", where)),
            gaps_per_hour=float(require(sec, "gaps_per_hour", where)),
            gap_s=as_range(require(sec, "gap_s", where), f"{where}.gap_s"),
            absent_signal_probability=dict(require(sec, "absent_signal_probability", where) or {}),
        )
        if out.n_patients < 1:
            raise ConfigError(f"{where}.n_patients: must be >= 1, got {out.n_patients}")
        if out.hours[0] * 3600 <= out.warmup_s:
            raise ConfigError(
                f"{where}.hours: the shortest recording ({out.hours[0]} h) must be longer than "
                f"warmup_s ({out.warmup_s} s); raise hours or lower warmup_s"
            )
        if not 0 <= out.nibp_fraction <= 1:
            raise ConfigError(f"{where}.nibp_fraction: must be within [0, 1], got {out.nibp_fraction}")
        return out


@dataclass(frozen=True)
class AnomalySpec:
    kind: str
    category: str  # how it is made: clinical (latent physiology), statistical or artefact (the measurement)
    event_class: str  # what it is to a clinician: physiological or technical
    weight: float
    signals: tuple[str, ...]
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def draw(self, rng: np.random.Generator, key: str) -> float:
        lo, hi = self.ranges[key]
        return float(rng.uniform(lo, hi))


@dataclass(frozen=True)
class Physiology:
    """`configs/synthetic.yaml`."""

    baseline: Mapping[str, tuple[float, float, float, float]]  # mean, sd, lo, hi
    fluctuation: Mapping[str, tuple[float, float]]  # sd, tau_s
    noise: Mapping[str, float]
    coupling: Mapping[str, float]
    induction: Mapping[str, tuple[float, float]]
    temperature_trend_c_per_h: tuple[float, float]
    nibp_cycle_s: tuple[float, float]
    nibp_error_sd: float
    scale: Mapping[str, float]
    anomalies: Mapping[str, AnomalySpec]
    low_pressure: LowPressure
    transients: Transients

    @classmethod
    def from_yaml(cls, path: str | Path) -> Physiology:
        raw = load_yaml(path)
        w = str(path)
        baseline = {
            k: (float(v["mean"]), float(v["sd"]), float(v["lo"]), float(v["hi"]))
            for k, v in require(raw, "baseline", w).items()
        }
        fluct = {k: (float(v["sd"]), float(v["tau_s"])) for k, v in require(raw, "fluctuation", w).items()}
        ind = {k: as_range(v, f"{w}: induction.{k}") for k, v in require(raw, "induction", w).items()}
        nibp = require(raw, "nibp", w)
        anomalies = {}
        for kind, body in require(raw, "anomalies", w).items():
            where = f"{w}: anomalies.{kind}"
            category = str(require(body, "category", where))
            if category not in CATEGORIES:
                raise ConfigError(f"{where}.category: '{category}' is not one of {CATEGORIES}")
            if kind not in CLINICAL_KINDS + STATISTICAL_KINDS + ARTEFACT_KINDS:
                raise ConfigError(
                    f"{where}: unknown anomaly kind; the generator implements "
                    f"{CLINICAL_KINDS + STATISTICAL_KINDS + ARTEFACT_KINDS}"
                )
            event_class = str(require(body, "class", where))
            if event_class not in CLASSES:
                raise ConfigError(f"{where}.class: '{event_class}' is not one of {CLASSES}")
            ranges = {
                k: as_range(v, f"{where}.{k}")
                for k, v in body.items()
                if k not in ("category", "class", "weight", "signals")
            }
            anomalies[kind] = AnomalySpec(
                kind=kind,
                category=category,
                event_class=event_class,
                weight=float(require(body, "weight", where)),
                signals=tuple(require(body, "signals", where)),
                ranges=ranges,
            )
        return cls(
            baseline=baseline,
            fluctuation=fluct,
            noise={k: float(v) for k, v in require(raw, "noise", w).items()},
            coupling={k: float(v) for k, v in require(raw, "coupling", w).items()},
            induction=ind,
            temperature_trend_c_per_h=as_range(
                require(raw, "temperature_trend_c_per_h", w), f"{w}: temperature_trend_c_per_h"
            ),
            nibp_cycle_s=as_range(require(nibp, "cycle_s", f"{w}: nibp"), f"{w}: nibp.cycle_s"),
            nibp_error_sd=float(require(nibp, "error_sd", f"{w}: nibp")),
            scale={k: float(v) for k, v in require(raw, "scale", w).items()},
            anomalies=anomalies,
            low_pressure=LowPressure.from_yaml(require(raw, "low_pressure", w), f"{w}: low_pressure"),
            transients=Transients.from_yaml(require(raw, "transients", w), f"{w}: transients"),
        )


@dataclass(frozen=True)
class LowPressure:
    """Long stretches of low pressure without an injected event (`configs/synthetic.yaml: low_pressure`): with
    `probability` a patient has `phases` of `duration_s` where the latent MAP settles near a level drawn from
    `map`, reached over `ramp_s`. The seconds where its MAP stays under a rule's limit long enough become
    rule-defined events (`biostream.data.dataset`), as on a real monitor."""

    probability: float
    phases: tuple[float, float]
    duration_s: tuple[float, float]
    map: tuple[float, float]
    ramp_s: tuple[float, float]

    @classmethod
    def from_yaml(cls, raw: Mapping[str, Any], where: str) -> LowPressure:
        ranges = (as_range(require(raw, k, where), f"{where}.{k}") for k in ("phases", "duration_s", "map", "ramp_s"))
        out = cls(float(require(raw, "probability", where)), *ranges)
        if not 0 <= out.probability <= 1:
            raise ConfigError(f"{where}.probability: must be within [0, 1], got {out.probability}")
        return out


@dataclass(frozen=True)
class Transients:
    """Short, real crossings of the bedside limits that end before a rule's minimum duration (`configs/synthetic.yaml:
    transients`): `per_hour` per patient-hour, each on one of `TRANSIENT_SIGNALS`, reaching a level drawn from
    `<signal>.to` for `<signal>.duration_s`. Unlabelled: they are not events, but a monitor without alarm delay
    alarms on them."""

    per_hour: float
    to: Mapping[str, tuple[float, float]]
    duration_s: Mapping[str, tuple[float, float]]

    @classmethod
    def from_yaml(cls, raw: Mapping[str, Any], where: str) -> Transients:
        to, dur = {}, {}
        for s in TRANSIENT_SIGNALS:
            body = require(raw, s, where)
            to[s] = as_range(require(body, "to", f"{where}.{s}"), f"{where}.{s}.to")
            dur[s] = as_range(require(body, "duration_s", f"{where}.{s}"), f"{where}.{s}.duration_s")
        return cls(float(require(raw, "per_hour", where)), to, dur)

