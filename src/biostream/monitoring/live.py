"""A period of the stream store against the model's reference (`check`): per signal drift (PSI over the reference's
deciles) and missingness, alarm episodes per bed-hour by class against the validation rate, and live recall of the
bedside rules' events (labels known a minute after they end, for free) by the alarms; the alerts they
raise. `Monitor` runs it in the service every `stream.monitor.every_s`; `biostream monitor` on demand."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from biostream.core.params import MonitorParams
from biostream.data.labels import find_runs
from biostream.data.schema import ADVISORY
from biostream.models.conditions import LABELS
from biostream.models.reference import Reference, bin_shares, psi

LABEL_DELAY_S = 60  # a rule's event is a label once it has ended this long ago
_log = logging.getLogger("biostream")


def _iso(second: float) -> str:
    return datetime.fromtimestamp(int(second), UTC).isoformat().replace("+00:00", "Z")


def rule_events(times: np.ndarray, values: np.ndarray, limits: Sequence[Any], signals: Sequence[str],
                until: int) -> list[tuple[int, int]]:
    """A bed's bedside-rule events in its stored seconds: runs of consecutive seconds beyond a limit lasting its
    `min_duration_s`, ended by `until - LABEL_DELAY_S` (known by then); (start, end) seconds, end exclusive."""
    out = []
    if not len(times):
        return out
    breaks = gaps(times)
    for lim in limits:
        runs = find_runs(lim.beyond(values[:, list(signals).index(lim.signal)]), breaks)
        for a, b in zip(runs.start.tolist(), runs.stop.tolist(), strict=True):
            start, end = int(times[a]), int(times[b - 1]) + 1
            if end - start >= lim.min_duration_s and end <= until - LABEL_DELAY_S:
                out.append((start, end))
    return out


def gaps(times: np.ndarray) -> np.ndarray:
    """Per stored second, whether a gap comes before it (a run of seconds breaks there: `find_runs`' breaks)."""
    return np.concatenate([[False], np.diff(times) != 1])


def check(store: Any, reference: Reference, signals: Sequence[str], limits: Sequence[Any], params: MonitorParams,
          until: int, since: int | None = None, model: dict[str, Any] | None = None,
          advisory_per_hour: float | None = None) -> dict[str, Any]:
    """The period [since, until) (default: the last `params.period_s`) of the store against `reference`, and the
    served advisory's episodes per bed-hour against its rate where the registry chose it (`advisory_per_hour`: the
    real recordings' advisory episodes per patient-hour; None: no advisory served, or none known)."""
    since = until - params.period_s if since is None else since
    beds = sorted(store.beds_with_seconds(since, until))
    sampled = len(beds) > params.max_beds
    if sampled:
        beds = sorted(np.random.default_rng(0).choice(beds, params.max_beds, replace=False).tolist())
    parts, opened, events, detected = [], {"physiological": 0, "technical": 0}, 0, 0
    # per signal, of the beds that read it at all in the period (a signal a bed does not monitor, an ICU bed's
    # capnograph, is no missing data): their seconds, those without a value, and how many beds
    monitored_s, absent_s, monitoring_beds = np.zeros(len(signals)), np.zeros(len(signals)), np.zeros(len(signals))
    for bed in beds:
        rows = store.seconds(bed, since, until, limit=until - since)
        times = np.array([r["second"] for r in rows], dtype=np.int64)
        values = np.vstack([np.frombuffer(r["vals"], dtype=np.float64) for r in rows]) if rows else None
        if values is None:
            continue
        parts.append(values)
        gaps = np.isnan(values)
        reads = ~gaps.all(axis=0)
        monitored_s += reads * len(values)
        absent_s += np.where(reads, gaps.sum(axis=0), 0)
        monitoring_beds += reads
        episodes = store.episodes(bed, since=since, limit=100_000)
        for e in episodes:
            if since <= e["start"] < until:
                opened[e["alarm_class"]] = opened.get(e["alarm_class"], 0) + 1
        alarmed = [(e["start"], e["end"] if e["end"] is not None else e["last_on"] + 1) for e in episodes
                   if e["alarm_class"] != ADVISORY]  # an advisory warns; it catches no event
        for a, b in rule_events(times, values, limits, signals, until):
            events += 1
            detected += any(s < b and a < z for s, z in alarmed)  # technical too: the monitor's limit was heard
    values = np.vstack(parts) if parts else np.empty((0, len(signals)))
    seconds = len(values)
    bed_hours = seconds / 3600
    out_signals, alerts = {}, []
    enough = seconds >= params.min_seconds
    for j, s in enumerate(signals):
        ref = reference.signals.get(s)
        col = values[:, j]
        seen = col[~np.isnan(col)]
        missing = float(absent_s[j] / monitored_s[j]) if monitored_s[j] else None
        index = psi(ref.shares, bin_shares(seen, np.asarray(ref.edges))) if ref is not None and len(seen) else None
        limit = params.psi_alert if ref is None else ref.psi_limit(len(beds), params.psi_alert)
        drifted = bool(enough and index is not None and index > limit)
        more_missing = bool(enough and ref is not None and missing is not None
                            and missing - ref.missing > params.missing_alert)
        out_signals[s] = {"psi": index, "psi_limit": limit, "missing": missing,
                          "reference_missing": None if ref is None else ref.missing,
                          "values": int(len(seen)), "monitoring_beds": int(monitoring_beds[j]), "drifted": drifted,
                          "missing_alert": more_missing}
        name = LABELS.get(s, s)
        if drifted:
            alerts.append({"check": f"drift:{s}", "message": f"{name} drifted from the training patients (PSI "
                                                             f"{index:.2f} > {limit:.2f})"})
        if more_missing:
            alerts.append({"check": f"missing:{s}", "message": f"{name} missing in {100 * missing:.0f}% of the "
                                                               f"monitored seconds (training: "
                                                               f"{100 * ref.missing:.0f}%)"})
    rates = {c: (n / bed_hours if bed_hours else None) for c, n in opened.items()}
    expected = dict(reference.alarms_per_hour)
    if advisory_per_hour is not None:
        expected[ADVISORY] = advisory_per_hour
    for c, rate in rates.items():
        ref_rate = expected.get(c)
        if (enough and rate is not None and ref_rate is not None and rate >= 1.0
                and rate > params.alarm_rate_factor * ref_rate):
            what, where = ((f"{c} alarm", "validation's") if c != ADVISORY else
                           ("advisory", "the real recordings' (where the registry chose it)"))
            alerts.append({"check": f"alarm_rate:{c}", "message": f"{rate:.1f} {what} episodes per bed-hour, over "
                                                                 f"{params.alarm_rate_factor:g} x {where} "
                                                                 f"{ref_rate:.2f}"})
    recall = detected / events if events else None
    if recall is not None and recall < params.recall_alert:
        alerts.append({"check": "recall", "message": f"the alarms caught {detected} of {events} bedside-rule "
                                                     f"events (recall {recall:.2f} < {params.recall_alert:g})"})
    return {"period": {"since": _iso(since), "until": _iso(until), "seconds": seconds, "beds": len(beds),
                       "sampled": sampled, "bed_hours": round(bed_hours, 3), "enough_data": enough},
            "signals": out_signals, "alarms_per_bed_hour": rates, "reference_alarms_per_bed_hour": expected,
            "episodes_opened": opened,
            "recall": {"events": events, "detected": detected, "recall": recall},
            "alerts": alerts, "model": model or {}, "reference": reference.made_from, "checked_at": _iso(time.time())}


class Monitor:
    """The service's monitoring: `run_once` checks the last period (wall clock), keeps the state (`state`), logs each
    new alert at WARNING and hands the state to `publish` (the /metrics gauges)."""

    def __init__(self, store: Any, reference: Reference, signals: Sequence[str], limits: Sequence[Any],
                 params: MonitorParams, model: dict[str, Any],
                 publish: Callable[[dict[str, Any]], None] | None = None, advisory_per_hour: float | None = None
                 ) -> None:
        self.store, self.reference, self.signals, self.limits = store, reference, list(signals), list(limits)
        self.params, self.model, self.publish = params, model, publish
        self.advisory_per_hour = advisory_per_hour
        self._state: dict[str, Any] | None = None
        self._alerting: set[str] = set()

    def state(self) -> dict[str, Any]:
        return self._state or {"alerts": [], "period": None, "note": "not checked yet"}

    def run_once(self, now: float | None = None) -> dict[str, Any]:
        until = int(time.time() if now is None else now) + 1
        state = check(self.store, self.reference, self.signals, self.limits, self.params, until, model=self.model,
                      advisory_per_hour=self.advisory_per_hour)
        for alert in state["alerts"]:
            if alert["check"] not in self._alerting:
                _log.warning("monitoring alert: %s (%s to %s)", alert["message"], state["period"]["since"],
                             state["period"]["until"])
        self._alerting = {a["check"] for a in state["alerts"]}
        self._state = state
        if self.publish is not None:
            self.publish(state)
        return state
