"""One synthetic patient: a 1 Hz recording of every signal with its injected events.

The recording is built in the order a monitor would see it happen, one function per step (`simulate_patient`):
the patient, its latent physiology, clinical episodes acting on it, the measurement, statistical anomalies and
artefacts acting on what is measured, the display. Every step draws from the patient's own generator in a fixed
order, so patient i depends only on the seed and i; reordering the draws changes every recording
(tests/data/test_synthetic.py holds the bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from biostream.core.config import SignalCatalog
from biostream.sources.synthetic.blocks import hold_samples, low_pass, ou_process, trapezoid
from biostream.sources.synthetic.events import draw_events
from biostream.sources.synthetic.params import (
    BASELINE_KEYS,
    BP_SIGNALS,
    ICU,
    OPERATING_ROOM,
    TRANSIENT_SIGNALS,
    AnomalySpec,
    CohortParams,
    Physiology,
)


@dataclass(frozen=True)
class PatientRecording:
    signals: dict[str, np.ndarray]
    events: list[dict[str, Any]]  # kind, category, event_class, start_s, end_s, signals
    bp_mode: str  # arterial | nibp | none (ICU patients)
    setting: str  # operating_room | icu


@dataclass(frozen=True)
class Patient:
    """Who the patient is: where monitored, baselines, MAP and pulse pressure at rest, how BP is measured, what is
    monitored."""

    setting: str
    base: dict[str, float]
    map0: float
    pp0: float
    bp_mode: str
    present: set[str]


@dataclass
class Latent:
    """The physiology behind the measurements, per second; clinical episodes add to it."""

    map_dev: np.ndarray
    pp_dev: np.ndarray
    hr_dev: np.ndarray
    spo2: np.ndarray
    rr: np.ndarray
    temp: np.ndarray
    etco2_dev: np.ndarray
    hr_extra: np.ndarray
    fever: np.ndarray
    etco2_extra: np.ndarray


def _noise_sd(phys: Physiology, signal: str) -> float:
    """Measurement noise of a signal; MAP's follows from SBP's and DBP's (MAP = DBP + (SBP - DBP) / 3)."""
    if signal == "map":
        return float(np.hypot(phys.noise["sbp"] / 3.0, 2.0 * phys.noise["dbp"] / 3.0))
    return phys.noise[signal]


def _baseline(rng: np.random.Generator, phys: Physiology, setting: str, key: str) -> float:
    mean, sd, lo, hi = phys.baseline[setting][key]
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _draw_patient(rng: np.random.Generator, phys: Physiology, params: CohortParams,
                  catalog: SignalCatalog) -> Patient:
    """Where the patient is monitored (the operating room or the ICU), individual baselines for that setting, how
    blood pressure is measured (arterial line, cuff, or not at all in the ICU) and which signals are monitored at
    all (an ICU patient: HR, SpO2 and impedance respiration only)."""
    setting = ICU if rng.random() < params.icu_fraction else OPERATING_ROOM
    base = {k: _baseline(rng, phys, setting, k) for k in BASELINE_KEYS}
    if base["sbp"] - base["dbp"] < 25:
        base["sbp"] = base["dbp"] + 25
    map0 = base["dbp"] + (base["sbp"] - base["dbp"]) / 3.0
    if setting == ICU:
        return Patient(setting, base, map0, base["sbp"] - base["dbp"], "none",
                       {s for s in catalog.keys if s in phys.icu_monitored})
    bp_mode = "nibp" if rng.random() < params.nibp_fraction else "arterial"
    present = {s for s in catalog.keys if rng.random() >= float(params.absent_signal_probability.get(s, 0.0))}
    return Patient(setting, base, map0, base["sbp"] - base["dbp"], bp_mode, present)


def _latent_physiology(rng: np.random.Generator, n: int, phys: Physiology, pt: Patient) -> Latent:
    """Slow fluctuation around the baselines, a temperature trend and, in the operating room, the MAP drop of
    induction and stretches of low pressure."""
    t = np.arange(n, dtype=np.float64)
    fl = phys.fluctuation
    map_dev = ou_process(rng, n, *fl["map"])
    pp_dev = ou_process(rng, n, *fl["pulse_pressure"])
    hr_dev = ou_process(rng, n, *fl["hr"])
    spo2 = pt.base["spo2"] + ou_process(rng, n, *fl["spo2"])
    rr = pt.base["rr"] + ou_process(rng, n, *fl["rr"])
    trend = rng.uniform(*phys.temperature_trend_c_per_h)
    temp = pt.base["temp"] + trend * t / 3600.0 + ou_process(rng, n, *fl["temp"])
    etco2_dev = ou_process(rng, n, *fl["etco2"])
    if pt.setting == OPERATING_ROOM:
        map_dev -= _induction(rng, t, phys, pt)
        map_dev += _low_pressure(rng, n, phys, pt)
    zeros = np.zeros(n)
    return Latent(map_dev, pp_dev, hr_dev, spo2, rr, temp, etco2_dev, zeros.copy(), zeros.copy(), zeros.copy())


def _induction(rng: np.random.Generator, t: np.ndarray, phys: Physiology, pt: Patient) -> np.ndarray:
    """How far anaesthesia induction lowers the latent MAP: down over the onset, then recovering."""
    ind = phys.induction
    i_start, i_onset = rng.uniform(*ind["start_s"]), rng.uniform(*ind["onset_s"])
    drop = rng.uniform(*ind["map_drop_fraction"]) * pt.map0
    tau = rng.uniform(*ind["recovery_tau_s"])
    ramp = np.clip((t - i_start) / i_onset, 0.0, 1.0)
    recovery = np.exp(-np.clip(t - i_start - i_onset, 0.0, None) / tau)
    return drop * ramp * recovery


def _low_pressure(rng: np.random.Generator, n: int, phys: Physiology, pt: Patient) -> np.ndarray:
    """The latent MAP's offset over the patient's stretches of low pressure (zero for most patients): each
    stretch moves the MAP towards a level near the limits and holds it there."""
    lp = phys.low_pressure
    out = np.zeros(n)
    if rng.random() >= lp.probability:
        return out
    for _ in range(int(rng.integers(int(lp.phases[0]), int(lp.phases[1]) + 1))):
        length = int(rng.uniform(*lp.duration_s))
        ramp = int(rng.uniform(*lp.ramp_s))
        start = int(rng.integers(0, max(1, n - length)))
        shape = trapezoid(min(length, n - start), ramp, max(0, length - 2 * ramp), ramp)
        out[start : start + len(shape)] = np.minimum(out[start : start + len(shape)],
                                                     shape * (rng.uniform(*lp.map) - pt.map0))
    return out


def _transients(rng: np.random.Generator, n: int, lt: Latent, pt: Patient, phys: Physiology,
                events: list[dict[str, Any]], warmup_s: int) -> None:
    """Short crossings of the limits, shorter than the rules' durations, outside events: HR up, MAP down, SpO2
    down, each over a few seconds' ramp (a monitor without alarm delay alarms on them; the rules do not); only on
    signals the patient's monitor shows."""
    tr = phys.transients
    signals = [s for s in TRANSIENT_SIGNALS if s in pt.present]
    if not signals:
        return
    busy = np.zeros(n, dtype=bool)
    for ev in events:
        busy[max(0, ev["start"] - 120) : ev["start"] + ev["duration"] + 120] = True
    for _ in range(int(rng.poisson(tr.per_hour * n / 3600.0))):
        signal = signals[int(rng.integers(len(signals)))]
        length = max(3, int(rng.uniform(*tr.duration_s[signal])))
        to = rng.uniform(*tr.to[signal])
        start = int(rng.integers(warmup_s, max(warmup_s + 1, n - length)))
        if busy[start : start + length].any():
            continue
        ramp = max(1, min(5, length // 4))
        shape = trapezoid(length, ramp, length - 2 * ramp, ramp)
        sl = slice(start, start + len(shape))
        if signal == "hr":
            lt.hr_extra[sl] += shape * max(0.0, to - (pt.base["hr"] + lt.hr_dev[sl].mean()))
        elif signal == "map":
            lt.map_dev[sl] += shape * min(0.0, to - (pt.map0 + lt.map_dev[sl].mean()))
        else:
            lt.spo2[sl] += shape * min(0.0, to - lt.spo2[sl].mean())


# --------------------------------------------------------------------------------------------------
# Clinical episodes: what each kind does to the latent physiology over its slice, shaped by its trapezoid
# (`target` is the level it reaches, drawn from configs/synthetic.yaml; extra draws follow it in this order)
# --------------------------------------------------------------------------------------------------

ClinicalEffect = Callable[[Latent, slice, np.ndarray, float, Patient, AnomalySpec, np.random.Generator], None]


def _hypotension(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                 rng: np.random.Generator) -> None:
    lt.map_dev[sl] += shape * (target - pt.map0)


def _tachycardia(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                 rng: np.random.Generator) -> None:
    lt.hr_extra[sl] += shape * (target - pt.base["hr"])


def _bradycardia(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                 rng: np.random.Generator) -> None:
    lt.hr_extra[sl] += shape * (target - pt.base["hr"])
    lt.map_dev[sl] += shape * spec.draw(rng, "map_change")


def _desaturation(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                  rng: np.random.Generator) -> None:
    lt.spo2[sl] += shape * (target - pt.base["spo2"])
    lt.hr_extra[sl] += shape * spec.draw(rng, "hr_change")


def _hypercapnia(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                 rng: np.random.Generator) -> None:
    lt.etco2_extra[sl] += shape * (target - pt.base["etco2"])
    lt.rr[sl] += shape * spec.draw(rng, "rr_change")
    lt.hr_extra[sl] += shape * spec.draw(rng, "hr_change")


def _hyperthermia(lt: Latent, sl: slice, shape: np.ndarray, target: float, pt: Patient, spec: AnomalySpec,
                  rng: np.random.Generator) -> None:
    lt.fever[sl] += shape * (target - pt.base["temp"])


CLINICAL_EFFECTS: dict[str, ClinicalEffect] = {
    "hypotension": _hypotension, "tachycardia": _tachycardia, "bradycardia": _bradycardia,
    "desaturation": _desaturation, "hypercapnia": _hypercapnia, "hyperthermia": _hyperthermia,
}


def _physiology(lt: Latent, pt: Patient, phys: Physiology) -> dict[str, np.ndarray]:
    """The latent signals after coupling: MAP, pulse pressure, HR (baroreflex, fever), temperature, EtCO2."""
    cp = phys.coupling
    map_lat = pt.map0 + lt.map_dev
    pp = pt.pp0 * np.power(np.clip(map_lat, 20.0, None) / pt.map0, cp["pulse_pressure_exponent"]) + lt.pp_dev
    pp = np.clip(pp, 10.0, None)
    baro = cp["baroreflex_bpm_per_mmhg"] * low_pass(pt.map0 - map_lat, cp["baroreflex_tau_s"])
    hr_lat = pt.base["hr"] + lt.hr_dev + baro + lt.hr_extra + cp["hr_bpm_per_degc"] * lt.fever
    # bradycardia must win over the baroreflex it provokes
    hr_lat = np.where(lt.hr_extra < -1.0, np.minimum(hr_lat, pt.base["hr"] + lt.hr_extra + lt.hr_dev), hr_lat)
    etco2 = pt.base["etco2"] + lt.etco2_dev + cp["etco2_mmhg_per_breath"] * (lt.rr - pt.base["rr"]) + lt.etco2_extra
    return {"map": map_lat, "pp": pp, "hr": hr_lat, "spo2": lt.spo2, "rr": lt.rr, "temp": lt.temp + lt.fever,
            "etco2": etco2}


def _measure(rng: np.random.Generator, n: int, lat: dict[str, np.ndarray], pt: Patient,
             phys: Physiology) -> dict[str, np.ndarray]:
    """What the monitor measures: noise on every signal; for NIBP patients, cuff readings held between cycles; for
    ICU patients, the respiration rate from chest impedance."""
    nz = phys.noise
    sbp = lat["map"] + 2.0 / 3.0 * lat["pp"] + rng.normal(0, nz["sbp"], n)
    dbp = lat["map"] - 1.0 / 3.0 * lat["pp"] + rng.normal(0, nz["dbp"], n)
    sig = {
        "hr": lat["hr"] + rng.normal(0, nz["hr"], n),
        "spo2": np.minimum(lat["spo2"] + rng.normal(0, nz["spo2"], n), 100.0),
        "sbp": sbp,
        "dbp": dbp,
        "map": dbp + (sbp - dbp) / 3.0,
        # a ventilated patient's rate is the ventilator's setting, a whole number, counted with a rare flicker
        "rr": np.round(lat["rr"]) + rng.normal(0, nz["rr"], n),
        "temp": lat["temp"] + rng.normal(0, nz["temp"], n),
        "etco2": lat["etco2"] + rng.normal(0, nz["etco2"], n),
    }
    if pt.setting == ICU:
        sig["rr"] = _impedance_rr(rng, n, lat["rr"], phys)
    if pt.bp_mode == "nibp":
        cycles = rng.uniform(*phys.nibp_cycle_s, size=int(n / phys.nibp_cycle_s[0]) + 2)
        times = (rng.uniform(0, phys.nibp_cycle_s[0]) + np.cumsum(cycles) - cycles[0]).astype(np.int64)
        times = times[times < n]
        err = rng.normal(0, phys.nibp_error_sd, (2, n))
        cuff_s, cuff_d = sig["sbp"] + err[0], sig["dbp"] + err[1]
        sig["sbp"] = hold_samples(cuff_s, times)
        sig["dbp"] = hold_samples(cuff_d, times)
        sig["map"] = hold_samples(cuff_d + (cuff_s - cuff_d) / 3.0, times)
    return sig


def _impedance_rr(rng: np.random.Generator, n: int, rr: np.ndarray, phys: Physiology) -> np.ndarray:
    """A spontaneously breathing patient's rate as an impedance monitor shows it: breath-to-breath variability
    (its size drawn per patient) and noise, refreshed every few seconds and held in between."""
    imp = phys.impedance_rr
    sd = rng.uniform(*imp.variability_sd)
    x = rr + ou_process(rng, n, sd, imp.variability_tau_s) + rng.normal(0, imp.noise_sd, n)
    steps = rng.uniform(*imp.update_s, size=int(n / imp.update_s[0]) + 1)
    times = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
    return hold_samples(x, times[times < n])


# --------------------------------------------------------------------------------------------------
# Statistical anomalies and artefacts: what each kind does to the measured signals over [a, a + dur)
# --------------------------------------------------------------------------------------------------

Fault = Callable[[dict[str, np.ndarray], dict[str, Any], Physiology, np.random.Generator], None]


def _signal_and_sign(ev: dict[str, Any], rng: np.random.Generator) -> tuple[str, float]:
    """The statistical anomaly's signal and direction (SpO2 only ever falls). The sign is drawn for every
    statistical kind, whether it uses it or not: the draw order fixes every later value."""
    s = ev["signals"][0]
    return s, -1.0 if s == "spo2" else float(rng.choice([-1.0, 1.0]))


def _step(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology, rng: np.random.Generator) -> None:
    s, sign = _signal_and_sign(ev, rng)
    sig[s][ev["start"] : ev["start"] + ev["duration"]] += sign * ev["spec"].draw(rng, "magnitude") * phys.scale[s]


def _drift(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology, rng: np.random.Generator) -> None:
    s, sign = _signal_and_sign(ev, rng)
    dur = ev["duration"]
    sig[s][ev["start"] : ev["start"] + dur] += (sign * ev["spec"].draw(rng, "magnitude") * phys.scale[s]
                                                * np.linspace(0, 1, dur))


def _flatline(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology, rng: np.random.Generator) -> None:
    s, _ = _signal_and_sign(ev, rng)
    a = ev["start"]
    sig[s][a : a + ev["duration"]] = sig[s][a - 1]


def _variance_burst(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology,
                    rng: np.random.Generator) -> None:
    s, _ = _signal_and_sign(ev, rng)
    sd = _noise_sd(phys, s) * ev["spec"].draw(rng, "noise_multiplier")
    sig[s][ev["start"] : ev["start"] + ev["duration"]] += rng.normal(0, sd, ev["duration"])


def _probe_off(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology, rng: np.random.Generator) -> None:
    """The probe slips (implausible low readings), then reads nothing."""
    a, dur = ev["start"], ev["duration"]
    lo, hi = ev["spec"].ranges["value"]
    slipping = max(1, dur // 2)
    sig["spo2"][a : a + slipping] = rng.uniform(lo, hi, slipping)
    sig["spo2"][a + slipping : a + dur] = np.nan


def _line_flush(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology, rng: np.random.Generator) -> None:
    """The arterial line is flushed: every pressure reads the flush bag's pressure."""
    a, dur = ev["start"], ev["duration"]
    level = ev["spec"].draw(rng, "value")
    for s in BP_SIGNALS:
        sig[s][a : a + dur] = level + rng.normal(0, 2.0, dur)


def _ecg_artefact(sig: dict[str, np.ndarray], ev: dict[str, Any], phys: Physiology,
                  rng: np.random.Generator) -> None:
    """The monitor double counts (T waves, pacing spikes, electrocautery): HR reads about twice the real rate."""
    a, dur = ev["start"], ev["duration"]
    sig["hr"][a : a + dur] *= ev["spec"].draw(rng, "factor")


FAULTS: dict[str, Fault] = {
    "spike": _step, "level_shift": _step, "drift": _drift, "flatline": _flatline,
    "variance_burst": _variance_burst, "probe_off": _probe_off, "line_flush": _line_flush,
    "ecg_artefact": _ecg_artefact,
}


def _stretches(rng: np.random.Generator, n: int, per_hour: float, duration_s: tuple[float, float],
               in_event: np.ndarray) -> list[tuple[int, int]]:
    """Random (start, length) stretches at `per_hour`, none that touches an injected event."""
    count = int(rng.poisson(per_hour * n / 3600.0))
    starts = rng.integers(0, n, count)
    lengths = np.maximum(1, rng.uniform(*duration_s, count).astype(np.int64))
    return [(int(a), int(k)) for a, k in zip(starts, lengths, strict=True) if not in_event[a : a + k].any()]


def _impedance_faults(rng: np.random.Generator, x: np.ndarray, in_event: np.ndarray, phys: Physiology,
                      lowest: float) -> np.ndarray:
    """What an impedance rate shows besides the rate (unlabelled, outside events): missed breaths, the shown rate
    counting down by one a second from the last value until a breath is found again; and drop-outs, nothing shown.
    A count below the signal's lowest valid value shows nothing too (a monitor's 0)."""
    imp = phys.impedance_rr
    n = len(x)
    x = x.copy()
    for a, k in _stretches(rng, n, rng.uniform(*imp.countdown_per_hour), imp.countdown_s, in_event):
        if a > 0:
            x[a : a + k] = x[a - 1] - np.arange(1, min(k, n - a) + 1)
    poor = rng.random() < imp.poor_contact_probability
    rate = rng.uniform(*(imp.poor_contact_dropouts_per_hour if poor else imp.dropouts_per_hour))
    for a, k in _stretches(rng, n, rate, imp.poor_contact_dropout_s if poor else imp.dropout_s, in_event):
        x[a : a + k] = np.nan
    x[x < lowest] = np.nan
    return x


def _display(rng: np.random.Generator, n: int, sig: dict[str, np.ndarray], events: list[dict[str, Any]],
             pt: Patient, phys: Physiology, params: CohortParams, catalog: SignalCatalog) -> dict[str, np.ndarray]:
    """Display resolution and range, the impedance rate's faults, absent signals, and unlabelled missing stretches
    (never inside an event)."""
    in_event = np.zeros(n, dtype=bool)
    for ev in events:
        in_event[ev["start"] : ev["start"] + ev["duration"]] = True
    out = {}
    for s in catalog.keys:
        spec_s = catalog[s]
        x = np.round(np.clip(sig[s], *spec_s.valid), spec_s.decimals)
        if s == "rr" and pt.setting == ICU and s in pt.present:
            x = _impedance_faults(rng, x, in_event, phys, spec_s.valid[0])
        if s not in pt.present:
            x[:] = np.nan
        else:
            for a, length in _stretches(rng, n, params.gaps_per_hour, params.gap_s, in_event):
                x[a : a + length] = np.nan
        out[s] = x.astype(np.float32)
    return out


def simulate_patient(
    rng: np.random.Generator, n: int, phys: Physiology, params: CohortParams, catalog: SignalCatalog
) -> PatientRecording:
    """One patient's 1 Hz recording of every signal, with its injected events, step by step:

    1. `_draw_patient`: the setting, baselines, how blood pressure is measured, which signals are monitored;
    2. `_latent_physiology`: slow Ornstein-Uhlenbeck fluctuation and, in the operating room, the anaesthesia
       induction (`_induction`) and long stretches of low pressure (`_low_pressure`, unlabelled);
    3. the events drawn (`draw_events`), clinical episodes act on that latent physiology (`CLINICAL_EFFECTS`, one
       function per kind), and so do short limit crossings (`_transients`, unlabelled), so coupled signals follow:
       `_physiology` then derives pulse pressure, the baroreflex, HR and EtCO2;
    4. `_measure`: measurement noise, cuff pressures held between cycles for NIBP patients, and for ICU patients
       the respiration rate as an impedance monitor shows it (`_impedance_rr`);
    5. statistical anomalies and artefacts act on what the monitor measures (`FAULTS`, one function per kind);
    6. `_display`: display resolution, the possible range, the impedance rate's missed breaths and drop-outs
       (`_impedance_faults`), absent signals and unlabelled missing stretches.
    """
    pt = _draw_patient(rng, phys, params, catalog)
    latent = _latent_physiology(rng, n, phys, pt)
    events = draw_events(rng, phys, params, n, pt.present, pt.bp_mode)
    for ev in events:
        spec: AnomalySpec = ev["spec"]
        if spec.category == "clinical":
            sl = slice(ev["start"], ev["start"] + ev["duration"])
            shape = trapezoid(ev["duration"], *ev["shape"])
            CLINICAL_EFFECTS[spec.kind](latent, sl, shape, spec.draw(rng, "target"), pt, spec, rng)
    _transients(rng, n, latent, pt, phys, events, params.warmup_s)
    sig = _measure(rng, n, _physiology(latent, pt, phys), pt, phys)
    for ev in events:
        if ev["spec"].category != "clinical":
            FAULTS[ev["spec"].kind](sig, ev, phys, rng)
    out_events = [
        {
            "kind": ev["spec"].kind,
            "category": ev["spec"].category,
            "event_class": ev["spec"].event_class,
            "start_s": ev["start"],
            "end_s": ev["start"] + ev["duration"],
            "signals": ",".join(ev["signals"]),
        }
        for ev in sorted(events, key=lambda e: e["start"])
    ]
    return PatientRecording(signals=_display(rng, n, sig, events, pt, phys, params, catalog), events=out_events,
                            bp_mode=pt.bp_mode, setting=pt.setting)
