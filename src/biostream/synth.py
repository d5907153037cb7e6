"""A synthetic cohort of intraoperative vital signs with injected, labelled anomalies.

Each patient is a 1 Hz recording built from a small physiological model (`configs/synthetic.yaml`):
patient-specific baselines; slow Ornstein-Uhlenbeck fluctuation; a shared latent arterial pressure
that drives SBP, DBP and MAP; a baroreflex (HR rises, after a lag, as MAP falls); EtCO2 coupled to
ventilation; anaesthesia induction and slow temperature drift; measurement noise; cuff pressures held
between cycles for patients without an arterial line; unlabelled missing stretches. Anomalies are then
injected at non-overlapping times: clinical episodes act on the latent physiology (so coupled signals
follow), statistical anomalies and artefacts act on the measured signal.

All work is vectorised per patient (a loop over patients and over a handful of events each).
Patient i's recording depends only on the seed and i, not on the cohort size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from biostream.config import ConfigError, SignalCatalog, as_range, load_yaml, require
from biostream.schema import EVENTS_SCHEMA, NO_EVENT, NO_KIND, empty_frame

CATEGORIES = ("clinical", "statistical", "artefact")
BP_SIGNALS = ("sbp", "dbp", "map")
CLINICAL_KINDS = ("hypotension", "tachycardia", "bradycardia", "desaturation", "hypercapnia", "fever")
STATISTICAL_KINDS = ("spike", "level_shift", "drift", "flatline", "variance_burst")
ARTEFACT_KINDS = ("probe_off", "line_flush")
# the signal a clinical episode is defined on (it must be monitored for the episode to be injected)
_MAIN_SIGNAL = {
    "hypotension": "map",
    "tachycardia": "hr",
    "bradycardia": "hr",
    "desaturation": "spo2",
    "hypercapnia": "etco2",
    "fever": "temp",
}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


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
    category: str
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
            ranges = {
                k: as_range(v, f"{where}.{k}")
                for k, v in body.items()
                if k not in ("category", "weight", "signals")
            }
            anomalies[kind] = AnomalySpec(
                kind=kind,
                category=category,
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
        )


# --------------------------------------------------------------------------------------------------
# Building blocks (pure, vectorised)
# --------------------------------------------------------------------------------------------------


def ou_process(rng: np.random.Generator, n: int, sd: float, tau_s: float) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck process sampled at 1 Hz (AR(1) with a = exp(-1/tau))."""
    a = float(np.exp(-1.0 / tau_s))
    x0 = rng.normal(0.0, sd)
    eps = rng.normal(0.0, sd * np.sqrt(1.0 - a * a), n)
    return lfilter([1.0], [1.0, -a], eps, zi=[a * x0])[0]


def low_pass(x: np.ndarray, tau_s: float) -> np.ndarray:
    """First-order lag with time constant tau_s (starts at x[0])."""
    alpha = 1.0 - float(np.exp(-1.0 / tau_s))
    return lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])[0]


def trapezoid(n: int, ramp_up: int, plateau: int, ramp_down: int) -> np.ndarray:
    """0 -> 1 over ramp_up samples, 1 for plateau, 1 -> 0 over ramp_down; length n (the event length)."""
    up = np.linspace(0.0, 1.0, ramp_up + 1)[1:]
    down = np.linspace(1.0, 0.0, ramp_down + 1)[:-1]
    shape = np.concatenate([up, np.ones(plateau), down])
    return shape[:n]


def place_events(
    rng: np.random.Generator, n: int, durations: np.ndarray, warmup: int, min_gap: int
) -> np.ndarray:
    """Random non-overlapping start times for events of the given durations, at least `min_gap` apart,
    none before `warmup`. Events that do not fit are dropped from the end; returns starts (len <= k)."""
    durations = np.asarray(durations, dtype=np.int64)
    k = len(durations)
    while k and warmup + durations[:k].sum() + min_gap * k > n:
        k -= 1
    if k == 0:
        return np.empty(0, dtype=np.int64)
    free = n - warmup - durations[:k].sum() - min_gap * k
    gaps = np.floor(rng.dirichlet(np.ones(k + 1)) * free).astype(np.int64)[:k]
    offsets = np.concatenate([[0], np.cumsum(durations[:k] + min_gap)[:-1]])
    return warmup + np.cumsum(gaps) + offsets


def hold_samples(values: np.ndarray, sample_times: np.ndarray) -> np.ndarray:
    """What a display shows when `values` is measured only at `sample_times`: each reading held until
    the next; NaN before the first."""
    n = len(values)
    idx = np.searchsorted(sample_times, np.arange(n), side="right") - 1
    out = np.full(n, np.nan)
    ok = idx >= 0
    out[ok] = values[sample_times[idx[ok]]]
    return out


# --------------------------------------------------------------------------------------------------
# One patient
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRecording:
    signals: dict[str, np.ndarray]
    events: list[dict[str, Any]]  # kind, category, start_s, end_s, signals
    bp_mode: str


def _noise_sd(phys: Physiology, signal: str) -> float:
    """Measurement noise of a signal; MAP's follows from SBP's and DBP's (MAP = DBP + (SBP - DBP) / 3)."""
    if signal == "map":
        return float(np.hypot(phys.noise["sbp"] / 3.0, 2.0 * phys.noise["dbp"] / 3.0))
    return phys.noise[signal]


def _baseline(rng: np.random.Generator, phys: Physiology, key: str) -> float:
    mean, sd, lo, hi = phys.baseline[key]
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _draw_events(
    rng: np.random.Generator,
    phys: Physiology,
    params: CohortParams,
    n: int,
    present: set[str],
    bp_mode: str,
) -> list[dict[str, Any]]:
    hours = n / 3600.0

    def applicable(spec: AnomalySpec) -> tuple[str, ...]:
        """Signals the anomaly can act on for this patient (empty: the kind is not applicable)."""
        if spec.category == "clinical":
            return spec.signals if _MAIN_SIGNAL[spec.kind] in present else ()
        if spec.kind == "line_flush":
            return spec.signals if bp_mode == "arterial" else ()
        usable = [s for s in spec.signals if s in present and not (bp_mode == "nibp" and s in BP_SIGNALS)]
        return tuple(usable)

    plans: list[dict[str, Any]] = []
    for rate, categories in (
        (params.anomalies_per_hour, ("clinical", "statistical")),
        (params.artefacts_per_hour, ("artefact",)),
    ):
        specs = [s for s in phys.anomalies.values() if s.category in categories and applicable(s)]
        if not specs:
            continue
        weights = np.array([s.weight for s in specs])
        count = rng.poisson(rate * hours)
        for i in rng.choice(len(specs), size=count, p=weights / weights.sum()):
            spec = specs[i]
            sigs = applicable(spec)
            plan: dict[str, Any] = {"spec": spec}
            if spec.category == "clinical":
                ramp_up = int(spec.draw(rng, "ramp_s"))
                plateau = int(spec.draw(rng, "plateau_s"))
                ramp_down = int(spec.draw(rng, "ramp_s"))
                plan.update(shape=(ramp_up, plateau, ramp_down), duration=ramp_up + plateau + ramp_down)
                plan["signals"] = tuple(s for s in sigs if s in present)
            else:
                plan["duration"] = max(1, int(round(spec.draw(rng, "duration_s"))))
                plan["signals"] = sigs if spec.category == "artefact" else (str(rng.choice(sigs)),)
            plans.append(plan)
    order = rng.permutation(len(plans))
    plans = [plans[i] for i in order]
    starts = place_events(
        rng, n, np.array([p["duration"] for p in plans], dtype=np.int64), params.warmup_s, params.min_gap_s
    )
    for plan, start in zip(plans, starts, strict=False):
        plan["start"] = int(start)
    return [p for p in plans if "start" in p]


def simulate_patient(
    rng: np.random.Generator, n: int, phys: Physiology, params: CohortParams, catalog: SignalCatalog
) -> PatientRecording:
    """One patient's 1 Hz recording of every signal, with its injected events."""
    t = np.arange(n, dtype=np.float64)
    base = {k: _baseline(rng, phys, k) for k in ("hr", "sbp", "dbp", "spo2", "rr", "temp", "etco2")}
    if base["sbp"] - base["dbp"] < 25:
        base["sbp"] = base["dbp"] + 25
    map0 = base["dbp"] + (base["sbp"] - base["dbp"]) / 3.0
    pp0 = base["sbp"] - base["dbp"]
    bp_mode = "nibp" if rng.random() < params.nibp_fraction else "arterial"
    present = {
        s for s in catalog.keys if rng.random() >= float(params.absent_signal_probability.get(s, 0.0))
    }
    cp = phys.coupling

    # slow physiology
    fl = phys.fluctuation
    map_dev = ou_process(rng, n, *fl["map"])
    pp_dev = ou_process(rng, n, *fl["pulse_pressure"])
    hr_dev = ou_process(rng, n, *fl["hr"])
    spo2 = base["spo2"] + ou_process(rng, n, *fl["spo2"])
    rr = base["rr"] + ou_process(rng, n, *fl["rr"])
    trend = rng.uniform(*phys.temperature_trend_c_per_h)
    temp = base["temp"] + trend * t / 3600.0 + ou_process(rng, n, *fl["temp"])
    etco2_dev = ou_process(rng, n, *fl["etco2"])

    ind = phys.induction
    i_start, i_onset = rng.uniform(*ind["start_s"]), rng.uniform(*ind["onset_s"])
    drop = rng.uniform(*ind["map_drop_fraction"]) * map0
    tau = rng.uniform(*ind["recovery_tau_s"])
    ramp = np.clip((t - i_start) / i_onset, 0.0, 1.0)
    recovery = np.exp(-np.clip(t - i_start - i_onset, 0.0, None) / tau)
    map_dev -= drop * ramp * recovery

    events = _draw_events(rng, phys, params, n, present, bp_mode)

    # clinical episodes act on the latent physiology
    hr_extra = np.zeros(n)
    fever = np.zeros(n)
    etco2_extra = np.zeros(n)
    for ev in events:
        spec: AnomalySpec = ev["spec"]
        if spec.category != "clinical":
            continue
        sl = slice(ev["start"], ev["start"] + ev["duration"])
        shape = trapezoid(ev["duration"], *ev["shape"])
        target = spec.draw(rng, "target")
        if spec.kind == "hypotension":
            map_dev[sl] += shape * (target - map0)
        elif spec.kind == "tachycardia":
            hr_extra[sl] += shape * (target - base["hr"])
        elif spec.kind == "bradycardia":
            hr_extra[sl] += shape * (target - base["hr"])
            map_dev[sl] += shape * spec.draw(rng, "map_change")
        elif spec.kind == "desaturation":
            spo2[sl] += shape * (target - base["spo2"])
            hr_extra[sl] += shape * spec.draw(rng, "hr_change")
        elif spec.kind == "hypercapnia":
            etco2_extra[sl] += shape * (target - base["etco2"])
            rr[sl] += shape * spec.draw(rng, "rr_change")
            hr_extra[sl] += shape * spec.draw(rng, "hr_change")
        elif spec.kind == "fever":
            fever[sl] += shape * (target - base["temp"])

    map_lat = map0 + map_dev
    pp = pp0 * np.power(np.clip(map_lat, 20.0, None) / map0, cp["pulse_pressure_exponent"]) + pp_dev
    pp = np.clip(pp, 10.0, None)
    baro = cp["baroreflex_bpm_per_mmhg"] * low_pass(map0 - map_lat, cp["baroreflex_tau_s"])
    hr_lat = base["hr"] + hr_dev + baro + hr_extra + cp["hr_bpm_per_degc"] * fever
    # bradycardia must win over the baroreflex it provokes
    hr_lat = np.where(hr_extra < -1.0, np.minimum(hr_lat, base["hr"] + hr_extra + hr_dev), hr_lat)
    temp = temp + fever
    etco2 = base["etco2"] + etco2_dev + cp["etco2_mmhg_per_breath"] * (rr - base["rr"]) + etco2_extra

    # measurement
    nz = phys.noise
    sbp = map_lat + 2.0 / 3.0 * pp + rng.normal(0, nz["sbp"], n)
    dbp = map_lat - 1.0 / 3.0 * pp + rng.normal(0, nz["dbp"], n)
    sig = {
        "hr": hr_lat + rng.normal(0, nz["hr"], n),
        "spo2": np.minimum(spo2 + rng.normal(0, nz["spo2"], n), 100.0),
        "sbp": sbp,
        "dbp": dbp,
        "map": dbp + (sbp - dbp) / 3.0,
        "rr": rr + rng.normal(0, nz["rr"], n),
        "temp": temp + rng.normal(0, nz["temp"], n),
        "etco2": etco2 + rng.normal(0, nz["etco2"], n),
    }
    if bp_mode == "nibp":
        cycles = rng.uniform(*phys.nibp_cycle_s, size=int(n / phys.nibp_cycle_s[0]) + 2)
        times = (rng.uniform(0, phys.nibp_cycle_s[0]) + np.cumsum(cycles) - cycles[0]).astype(np.int64)
        times = times[times < n]
        err = rng.normal(0, phys.nibp_error_sd, (2, n))
        cuff_s, cuff_d = sig["sbp"] + err[0], sig["dbp"] + err[1]
        sig["sbp"] = hold_samples(cuff_s, times)
        sig["dbp"] = hold_samples(cuff_d, times)
        sig["map"] = hold_samples(cuff_d + (cuff_s - cuff_d) / 3.0, times)

    # statistical anomalies and artefacts act on what the monitor measures
    for ev in events:
        spec = ev["spec"]
        if spec.category == "clinical":
            continue
        a, dur = ev["start"], ev["duration"]
        sl = slice(a, a + dur)
        if spec.category == "statistical":
            s = ev["signals"][0]
            sign = -1.0 if s == "spo2" else float(rng.choice([-1.0, 1.0]))
            if spec.kind in ("spike", "level_shift"):
                sig[s][sl] += sign * spec.draw(rng, "magnitude") * phys.scale[s]
            elif spec.kind == "drift":
                sig[s][sl] += sign * spec.draw(rng, "magnitude") * phys.scale[s] * np.linspace(0, 1, dur)
            elif spec.kind == "flatline":
                sig[s][sl] = sig[s][a - 1]
            elif spec.kind == "variance_burst":
                sd = _noise_sd(phys, s) * spec.draw(rng, "noise_multiplier")
                sig[s][sl] += rng.normal(0, sd, dur)
        elif spec.kind == "probe_off":
            lo, hi = spec.ranges["value"]
            slipping = max(1, dur // 2)
            sig["spo2"][a : a + slipping] = rng.uniform(lo, hi, slipping)
            sig["spo2"][a + slipping : a + dur] = np.nan
        elif spec.kind == "line_flush":
            level = spec.draw(rng, "value")
            for s in BP_SIGNALS:
                sig[s][sl] = level + rng.normal(0, 2.0, dur)

    # display resolution, possible range, missing data
    in_event = np.zeros(n, dtype=bool)
    for ev in events:
        in_event[ev["start"] : ev["start"] + ev["duration"]] = True
    for s in catalog.keys:
        spec_s = catalog[s]
        x = np.clip(sig[s], *spec_s.valid)
        x = np.round(x, spec_s.decimals)
        if s not in present:
            x[:] = np.nan
        else:
            n_gaps = rng.poisson(params.gaps_per_hour * n / 3600.0)
            starts = rng.integers(0, n, n_gaps)
            lengths = rng.uniform(*params.gap_s, n_gaps).astype(np.int64)
            for a, length in zip(starts, lengths, strict=True):
                if not in_event[a : a + length].any():
                    x[a : a + length] = np.nan
        sig[s] = x.astype(np.float32)

    out_events = [
        {
            "kind": ev["spec"].kind,
            "category": ev["spec"].category,
            "start_s": ev["start"],
            "end_s": ev["start"] + ev["duration"],
            "signals": ",".join(ev["signals"]),
        }
        for ev in sorted(events, key=lambda e: e["start"])
    ]
    return PatientRecording(signals=sig, events=out_events, bp_mode=bp_mode)


# --------------------------------------------------------------------------------------------------
# The cohort
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cohort:
    vitals: pd.DataFrame  # patient_id, time_s, signals, label, artefact, anomaly_kind, event_id
    events: pd.DataFrame  # EVENTS_SCHEMA
    patients: pd.DataFrame  # patient_id, hours, bp_mode, n_events


def patient_ids(n: int) -> list[str]:
    return [f"S{i:04d}" for i in range(n)]


def generate_cohort(
    params: CohortParams,
    phys: Physiology,
    catalog: SignalCatalog,
    progress: Sequence[int] | None = None,
) -> Cohort:
    """The whole synthetic cohort. `progress` may wrap `range(n_patients)` (e.g. with tqdm)."""
    children = np.random.SeedSequence(params.seed).spawn(params.n_patients)
    ids = patient_ids(params.n_patients)
    frames, event_rows, patient_rows = [], [], []
    next_event = 0
    for i in progress if progress is not None else range(params.n_patients):
        rng = np.random.default_rng(children[i])
        n = int(rng.uniform(*params.hours) * 3600)
        rec = simulate_patient(rng, n, phys, params, catalog)
        label = np.zeros(n, dtype=np.int8)
        artefact = np.zeros(n, dtype=np.int8)
        kind = np.full(n, NO_KIND, dtype=object)
        event_id = np.full(n, NO_EVENT, dtype=np.int32)
        for ev in rec.events:
            sl = slice(ev["start_s"], ev["end_s"])
            (artefact if ev["category"] == "artefact" else label)[sl] = 1
            kind[sl] = ev["kind"]
            event_id[sl] = next_event
            event_rows.append({"event_id": next_event, "patient_id": ids[i], **ev})
            next_event += 1
        frame = {"patient_id": np.full(n, ids[i], dtype=object), "time_s": np.arange(n, dtype=np.int32)}
        frame.update({s: rec.signals[s] for s in catalog.keys})
        frame.update(label=label, artefact=artefact, anomaly_kind=kind, event_id=event_id)
        frames.append(pd.DataFrame(frame))
        patient_rows.append(
            {"patient_id": ids[i], "hours": n / 3600.0, "bp_mode": rec.bp_mode, "n_events": len(rec.events)}
        )
    events = pd.DataFrame(event_rows) if event_rows else empty_frame(EVENTS_SCHEMA)
    return Cohort(
        vitals=pd.concat(frames, ignore_index=True),
        events=events[EVENTS_SCHEMA.names],
        patients=pd.DataFrame(patient_rows),
    )
