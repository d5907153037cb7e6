"""What describes a synthetic patient and cohort: `params.yaml: generate` (`CohortParams`) and
`configs/synthetic.yaml` (`Physiology`, with one `AnomalySpec` per injectable kind)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.config import ConfigError, as_range, load_yaml, require
from biostream.core.params import CohortParams  # noqa: F401 (params.yaml: its section)

# where a patient is monitored (configs/synthetic.yaml: settings): anaesthetised in the operating room, or in the ICU
OPERATING_ROOM, ICU = "operating_room", "icu"
SETTINGS = (OPERATING_ROOM, ICU)
BASELINE_KEYS = ("hr", "sbp", "dbp", "spo2", "rr", "temp", "etco2")  # MAP follows from SBP and DBP
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

    # per setting, per signal: mean, sd, lo, hi (an ICU patient's unmonitored signals take the operating room's)
    baseline: Mapping[str, Mapping[str, tuple[float, float, float, float]]]
    icu_monitored: tuple[str, ...]  # the only signals an ICU patient's monitor shows
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
    impedance_rr: ImpedanceRR

    @classmethod
    def from_yaml(cls, path: str | Path) -> Physiology:
        raw = load_yaml(path)
        w = str(path)
        icu_monitored = tuple(require(require(require(raw, "settings", w), ICU, f"{w}: settings"), "monitored",
                                      f"{w}: settings.{ICU}"))
        known = (*BASELINE_KEYS, "map")
        unknown = [s for s in icu_monitored if s not in known]
        if unknown:
            raise ConfigError(f"{w}: settings.{ICU}.monitored: unknown signals {unknown}; use some of {known}")
        baseline = _baselines(require(raw, "baseline", w), icu_monitored, f"{w}: baseline")
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
            icu_monitored=icu_monitored,
            impedance_rr=ImpedanceRR.from_yaml(require(raw, "impedance_rr", w), f"{w}: impedance_rr"),
        )


def _baselines(raw: Mapping[str, Any], icu_monitored: tuple[str, ...],
               where: str) -> dict[str, dict[str, tuple[float, float, float, float]]]:
    """Per setting and signal (mean, sd, lo, hi). The operating room names every signal; the ICU names what its
    patients show, and the rest of their physiology (never displayed) is drawn as the operating room's."""
    out: dict[str, dict[str, tuple[float, float, float, float]]] = {}
    for setting in SETTINGS:
        body = require(raw, setting, where) or {}
        out[setting] = {}
        for k, v in body.items():
            w = f"{where}.{setting}.{k}"
            if k not in BASELINE_KEYS:
                raise ConfigError(f"{w}: unknown signal; baselines are drawn for {BASELINE_KEYS}")
            mean, sd, lo, hi = (float(require(v, f, w)) for f in ("mean", "sd", "lo", "hi"))
            if not lo <= mean <= hi or sd < 0:
                raise ConfigError(f"{w}: need lo <= mean <= hi and sd >= 0, got {v}")
            out[setting][k] = (mean, sd, lo, hi)
    missing = [k for k in BASELINE_KEYS if k not in out[OPERATING_ROOM]]
    if missing:
        raise ConfigError(f"{where}.{OPERATING_ROOM}: missing signals {missing} (every signal needs a baseline)")
    missing = [k for k in icu_monitored if k in BASELINE_KEYS and k not in out[ICU]]
    if missing:
        raise ConfigError(f"{where}.{ICU}: missing signals {missing}: ICU patients show them "
                          f"(settings.{ICU}.monitored); give each a baseline")
    out[ICU] = {**out[OPERATING_ROOM], **out[ICU]}
    return out


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



@dataclass(frozen=True)
class ImpedanceRR:
    """How an ICU monitor shows the respiration rate it derives from chest impedance (`configs/synthetic.yaml:
    impedance_rr`): the spontaneous rate varies breath to breath (an OU process whose sd is drawn per patient from
    `variability_sd`, time constant `variability_tau_s`, plus white `noise_sd`); the display refreshes every
    `update_s` seconds and holds the integer in between; a missed breath makes the shown rate count down by one
    a second for `countdown_s` (`countdown_per_hour`); and the reading drops out (nothing shown) for `dropout_s`,
    `dropouts_per_hour` (rates drawn per patient), far more often for a patient with poor lead contact."""

    variability_sd: tuple[float, float]
    variability_tau_s: float
    noise_sd: float
    update_s: tuple[float, float]
    countdown_per_hour: tuple[float, float]
    countdown_s: tuple[float, float]
    dropouts_per_hour: tuple[float, float]
    dropout_s: tuple[float, float]
    poor_contact_probability: float
    poor_contact_dropouts_per_hour: tuple[float, float]
    poor_contact_dropout_s: tuple[float, float]

    @classmethod
    def from_yaml(cls, raw: Mapping[str, Any], where: str) -> ImpedanceRR:
        def part(key: str) -> Mapping[str, Any]:
            return require(raw, key, where)

        def range_of(body: Mapping[str, Any], key: str, at: str) -> tuple[float, float]:
            return as_range(require(body, key, f"{where}.{at}"), f"{where}.{at}.{key}")

        var, cd, do, pc = part("variability"), part("countdown"), part("dropouts"), part("poor_contact")
        out = cls(
            variability_sd=range_of(var, "sd", "variability"),
            variability_tau_s=float(require(var, "tau_s", f"{where}.variability")),
            noise_sd=float(require(raw, "noise_sd", where)),
            update_s=as_range(require(raw, "update_s", where), f"{where}.update_s"),
            countdown_per_hour=range_of(cd, "per_hour", "countdown"),
            countdown_s=range_of(cd, "duration_s", "countdown"),
            dropouts_per_hour=range_of(do, "per_hour", "dropouts"),
            dropout_s=range_of(do, "duration_s", "dropouts"),
            poor_contact_probability=float(require(pc, "probability", f"{where}.poor_contact")),
            poor_contact_dropouts_per_hour=range_of(pc, "per_hour", "poor_contact"),
            poor_contact_dropout_s=range_of(pc, "duration_s", "poor_contact"),
        )
        if out.update_s[0] < 1:
            raise ConfigError(f"{where}.update_s: the display refreshes at most once a second; low must be >= 1, "
                              f"got {out.update_s[0]}")
        if not 0 <= out.poor_contact_probability <= 1:
            raise ConfigError(f"{where}.poor_contact.probability: must be within [0, 1], "
                              f"got {out.poor_contact_probability}")
        if out.variability_tau_s <= 0:
            raise ConfigError(f"{where}.variability.tau_s: must be > 0, got {out.variability_tau_s}")
        return out
