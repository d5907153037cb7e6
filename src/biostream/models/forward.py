"""Advisories judged forward: every second of every patient, no case-control sampling (Enevoldsen & Vistisen 2022).

Definitions (`configs/advisories.yaml: evaluation`; docs/advisories.md):
- onset: the first second of a rule event (the threshold crossing that became one, `alarm_events`); new-onset: no
  event of that kind in the `new_onset_s` before it.
- warned: an advisory episode of the event's kind is open `lead_s` before the onset, having started at least `lead_s`
  before it (it may run into the event); lead: onset minus its start.
- false advisory episode: no onset of its kind within it or in the `false_after_s` after its end; PPV the others'
  share.
- time under advisory: the share of patient time with an advisory of any kind open.
- early-warning AUROC per kind at each horizon: seconds not inside an event of the kind, positive where an onset of
  the kind comes within the horizon; and in the grey zone (e.g. MAP 65-75).
- patient-level bootstrap: each candidate's difference to the reference baseline (warned, new-onset warned, false
  advisory episodes per hour), 95% percentile interval over resampled patients, paired.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from biostream.core.config import AlarmRule
from biostream.models.advisory import Advised
from biostream.models.candidates import ANY, Evaluation

COUNTS = ("events", "warned", "new_onset", "new_onset_warned", "episodes", "false", "on_s", "seconds")


@dataclass(frozen=True)
class Judged:
    """One candidate on one source: per patient and kind the counts (COUNTS), the leads, and AUROCs."""

    counts: pd.DataFrame  # patient_id, kind, and COUNTS (kind "*": time under any advisory, seconds)
    leads: pd.DataFrame  # patient_id, kind, new_onset, lead_s: one row per warned event
    auroc: dict[str, float | None]

    def summary(self, kind: str | None = None) -> dict[str, Any]:
        """The figures over every kind (kind None) or one."""
        c = self.counts
        per = c[c["kind"] != "*"] if kind is None else c[c["kind"] == kind]
        total = per[list(COUNTS[:6])].sum()
        seconds = c.loc[c["kind"] == "*", "seconds"].sum()
        on_s = (c.loc[c["kind"] == "*", "on_s"].sum() if kind is None else per["on_s"].sum())
        hours = seconds / 3600.0
        leads = self.leads if kind is None else self.leads[self.leads["kind"] == kind]
        lead = float(leads["lead_s"].median()) if len(leads) else None
        return {"events": int(total["events"]), "warned": int(total["warned"]),
                "new_onset": int(total["new_onset"]), "new_onset_warned": int(total["new_onset_warned"]),
                "median_lead_s": lead,
                "advisory_episodes_per_hour": _ratio(total["episodes"], hours),
                "false_per_hour": _ratio(total["false"], hours),
                "ppv": _ratio(total["episodes"] - total["false"], total["episodes"]),
                "time_under_advisory": _ratio(on_s, seconds)}


def _ratio(a: float, b: float) -> float | None:
    return float(a) / float(b) if b else None


def onsets(rule_events: pd.DataFrame, new_onset_s: int) -> pd.DataFrame:
    """The rule events' onsets (patient_id, kind, onset_s, end_s) with `new_onset`: no event of the kind in the
    `new_onset_s` before."""
    ev = rule_events.sort_values(["patient_id", "kind", "start_s"]).reset_index(drop=True)
    prev_end = ev.groupby(["patient_id", "kind"])["end_s"].shift(1)
    new = prev_end.isna() | (ev["start_s"] - prev_end >= new_onset_s)
    return pd.DataFrame({"patient_id": ev["patient_id"], "kind": ev["kind"], "onset_s": ev["start_s"],
                         "end_s": ev["end_s"], "new_onset": new.to_numpy()})


def judge(advised: Advised, frame: pd.DataFrame, rule_events: pd.DataFrame, rules: tuple[AlarmRule, ...],
          ev: Evaluation) -> Judged:
    """One candidate's advisories (`advised`, on `frame`'s rows) against the rule events of every rule kind. An
    advisory of a kind warns that kind's events and is false without one; an advisory of `ANY` kind (a learned score
    that names no rule) warns every kind and is false when no event of any kind follows. A candidate that has no
    advisory of a kind warns none of its events."""
    kinds = tuple(r.kind for r in rules)
    pid = frame["patient_id"].to_numpy()
    patients = pd.unique(pid)
    ons = onsets(rule_events[rule_events["patient_id"].isin(patients) & rule_events["kind"].isin(kinds)],
                 ev.new_onset_s)
    eps = advised.episodes
    on_s = {k: pd.Series(flags).groupby(pid).sum() for k, flags in advised.on.items()}
    rows, leads = [], []
    for kind in kinds:  # the events: warned by an advisory of their kind (or of any)
        warners = eps[eps["kind"].isin((kind, ANY))]
        k_ons = ons[ons["kind"] == kind]
        for p in patients:
            o = k_ons[k_ons["patient_id"] == p]
            e = warners[warners["patient_id"] == p]
            o_s, e_start, e_end = o["onset_s"].to_numpy(), e["start_s"].to_numpy(), e["end_s"].to_numpy()
            at = o_s - ev.lead_s
            open_at = (e_start[None, :] <= at[:, None]) & (at[:, None] < e_end[None, :])  # open at onset - lead
            warned = open_at.any(axis=1)
            for i in np.flatnonzero(warned):
                first = int(np.argmax(open_at[i]))
                leads.append((p, kind, bool(o["new_onset"].iloc[i]), float(o_s[i] - e_start[first])))
            new = o["new_onset"].to_numpy(bool)
            rows.append((p, kind, len(o_s), int(warned.sum()), int(new.sum()), int((warned & new).sum()), 0, 0,
                         int(on_s[kind].get(p, 0)) if kind in on_s else 0, 0))
    for kind in advised.on:  # the episodes: false without an onset of their kind (any kind for ANY) in or after
        targets = ons if kind == ANY else ons[ons["kind"] == kind]
        k_eps = eps[eps["kind"] == kind]
        for p in patients:
            o_s = targets.loc[targets["patient_id"] == p, "onset_s"].to_numpy()
            e = k_eps[k_eps["patient_id"] == p]
            e_start, e_end = e["start_s"].to_numpy(), e["end_s"].to_numpy()
            hit = (o_s[None, :] >= e_start[:, None]) & (o_s[None, :] < e_end[:, None] + ev.false_after_s)
            rows.append((p, kind, 0, 0, 0, 0, len(e_start), int((~hit.any(axis=1)).sum()),
                         int(on_s[kind].get(p, 0)) if kind == ANY else 0, 0))
    seconds = pd.Series(pid).value_counts()
    on_any = pd.Series(advised.any_on(len(frame))).groupby(pid).sum()
    for p in patients:
        rows.append((p, "*", 0, 0, 0, 0, 0, 0, int(on_any.get(p, 0)), int(seconds.get(p, 0))))
    counts = pd.DataFrame(rows, columns=["patient_id", "kind", *COUNTS])
    return Judged(counts, pd.DataFrame(leads, columns=["patient_id", "kind", "new_onset", "lead_s"]),
                  early_warning_auroc(advised, frame, ons, rules, ev))


def early_warning_auroc(advised: Advised, frame: pd.DataFrame, ons: pd.DataFrame, rules: tuple[AlarmRule, ...],
                        ev: Evaluation) -> dict[str, float | None]:
    """AUROC of each kind's score for "an onset of the kind within the horizon", seconds inside an event of the
    kind left out (`<kind>@<horizon>s`), and in the grey zone (`grey_zone`). A kind the candidate has no score for
    ranks nothing (no entry)."""
    pid, t = frame["patient_id"].to_numpy(), frame["time_s"].to_numpy()
    out: dict[str, float | None] = {}
    gz = ev.grey_zone
    for rule in rules:
        kind = rule.kind
        score = advised.scores.get(kind, advised.scores.get(ANY))
        if score is None:
            continue
        inside, soon = event_clock(pid, t, ons[ons["kind"] == kind])
        valid = np.isfinite(score)
        lowest = np.nanmin(score) - 1.0 if valid.any() else 0.0
        s = np.where(valid, score, lowest)
        for h in ev.horizons_s:
            out[f"{kind}@{h}s"] = _auroc(soon <= h, s, ~inside)
        if kind == gz.kind and rule.signal in frame:
            values = frame[rule.signal].to_numpy(np.float64)
            stratum = ~inside & (values >= gz.low) & (values <= gz.high)
            out[f"{kind}@{gz.horizon_s}s in {gz.low:g}-{gz.high:g}"] = _auroc(soon <= gz.horizon_s, s, stratum)
    return out


PRECURSOR_S = (600, 300, 120, 60)  # seconds before an onset at which its signal is read


def precursors(frame: pd.DataFrame, rule_events: pd.DataFrame, rule: AlarmRule, ev: Evaluation) -> dict[str, Any]:
    """What comes before a rule kind's events (the synthetic world's precursors are compared with the real ones in
    metrics/realism.json): the signal's median at 10, 5, 2 and 1 min before each onset, the median change over the
    last 10 min, and the share of onsets that come without warning (the signal still outside the grey zone's band,
    e.g. MAP >= 75, `grey_zone.horizon_s` before), of all onsets and of new-onset ones."""
    ons = onsets(rule_events[rule_events["kind"] == rule.kind], ev.new_onset_s)
    ons = ons[ons["patient_id"].isin(pd.unique(frame["patient_id"]))]
    out: dict[str, Any] = {"kind": rule.kind, "signal": rule.signal, "onsets": int(len(ons)),
                           "new_onset": int(ons["new_onset"].sum())}
    if rule.signal not in frame or not len(ons):
        return out
    values = frame.set_index(["patient_id", "time_s"])[rule.signal]
    before = {s: values.reindex(pd.MultiIndex.from_arrays([ons["patient_id"], ons["onset_s"] - s])).to_numpy(float)
              for s in sorted(set(PRECURSOR_S) | {ev.grey_zone.horizon_s})}
    new = ons["new_onset"].to_numpy(bool)
    out["median_before"] = {f"-{s}s": _median(before[s]) for s in PRECURSOR_S}
    out["new_onset_median_before"] = {f"-{s}s": _median(before[s][new]) for s in PRECURSOR_S}
    out["median_change_10_to_1_min"] = _median(before[60] - before[600])
    gz = ev.grey_zone
    at = before[gz.horizon_s]
    outside = (at > gz.high) if not rule.above else (at < gz.low)
    seen = np.isfinite(at)
    out["without_warning"] = _ratio(int((outside & seen).sum()), int(seen.sum()))
    out["new_onset_without_warning"] = _ratio(int((outside & seen & new).sum()), int((seen & new).sum()))
    return out


def _median(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None


def event_clock(pid: np.ndarray, t: np.ndarray, ons: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per row: inside an event of these onsets; seconds until the next onset (inf when none)."""
    inside = np.zeros(len(t), dtype=bool)
    soon = np.full(len(t), np.inf)
    if not len(ons):
        return inside, soon
    for p, o in ons.groupby("patient_id"):
        rows = np.flatnonzero(pid == p)
        tp = t[rows]
        start, end = o["onset_s"].to_numpy(), o["end_s"].to_numpy()
        order = np.argsort(start)
        start, end = start[order], end[order]
        i = np.searchsorted(start, tp, side="right")  # next onset strictly after t: start[i]
        has = i < len(start)
        soon[rows[has]] = start[i[has]] - tp[has]
        j = i - 1  # the last onset at or before t
        ok = j >= 0
        inside[rows[ok]] = tp[ok] < end[j[ok]]
    return inside, soon


def _auroc(label: np.ndarray, score: np.ndarray, keep: np.ndarray) -> float | None:
    y, s = label[keep], score[keep]
    if y.all() or not y.any():
        return None
    return float(roc_auc_score(y, s))


def per_patient(j: Judged, patients: np.ndarray, kind: str | None = None) -> np.ndarray:
    """Per patient (in `patients`' order): events, warned, new_onset, new_onset_warned, false, seconds."""
    c = j.counts
    per = c[c["kind"] != "*"] if kind is None else c[c["kind"] == kind]
    sums = per.groupby("patient_id")[["events", "warned", "new_onset", "new_onset_warned", "false"]].sum()
    seconds = c[c["kind"] == "*"].groupby("patient_id")["seconds"].sum()
    return pd.concat([sums, seconds], axis=1).reindex(patients).fillna(0).to_numpy(np.float64)


def bootstrap(judged: Mapping[str, Judged], reference: str, resamples: int, seed: int,
              kind: str | None = None) -> dict[str, dict[str, list[float] | None]]:
    """Each candidate's difference to `reference` (warned share, new-onset warned share, false advisory episodes per
    hour), paired over patient-level resamples: [2.5%, 50%, 97.5%] percentiles (None where no resample has events).
    For one `kind`, the warned shares only: an advisory of any kind (a learned one) has no false episodes of a kind."""
    patients = pd.unique(judged[reference].counts["patient_id"])
    rng = np.random.default_rng(seed)
    weights = np.stack([np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
                        for _ in range(resamples)]).astype(np.float64) if resamples else np.zeros((0, len(patients)))

    def figures(j: Judged) -> np.ndarray:
        s = weights @ per_patient(j, patients, kind)  # resamples x counts
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.stack([s[:, 1] / s[:, 0], s[:, 3] / s[:, 2], s[:, 4] / (s[:, 5] / 3600.0)], axis=1)

    base = figures(judged[reference])
    out = {}
    for name, j in judged.items():
        if name == reference:
            continue
        diff = figures(j) - base
        out[name] = {stat: (None if not np.isfinite(diff[:, i]).any() or (kind is not None and i == 2) else
                            [float(v) for v in np.nanpercentile(np.where(np.isfinite(diff[:, i]), diff[:, i], np.nan),
                                                                [2.5, 50, 97.5])])
                     for i, stat in enumerate(("warned_share", "new_onset_warned_share", "false_per_hour"))}
    return out


RATES = ("advisory_episodes_per_hour", "false_per_hour", "time_under_advisory")  # a chosen source's, kept with it


def choose_reference(summaries: Mapping[str, Mapping[str, Any]], ev: Evaluation) -> str:
    """The baseline that warns the most new-onset events within the advisory budget (then the most events, then the
    fewest false); the one with the fewest false advisory episodes when none is within it."""
    within = {n: s for n, s in summaries.items() if ev.within(s)}
    if within:
        return max(within, key=lambda n: (within[n]["new_onset_warned"], within[n]["warned"],
                                          -(within[n]["false_per_hour"] or 0.0)))
    return min(summaries, key=lambda n: summaries[n]["false_per_hour"] or 0.0)


def choose_advisory(source: str, metrics: Mapping[str, Any], budget: Mapping[str, float]) -> dict[str, Any]:
    """The champion's advisory source on one source's advisory metrics (`biostream.reporting.advisory`): the
    reference baseline (the one warning the most new-onset events within the advisory budget), unless a learned
    candidate is within the budget (false advisory episodes per hour, time under advisory), warns more new-onset
    events and its patient-bootstrap interval of the difference in new-onset events warned excludes 0. The reason
    says which and why, with the figures; `rates` (and `baseline_rates`): its advisory episodes and false ones per
    patient-hour and its time under advisory there, what the service's monitoring compares the live rate with."""
    ref_name = metrics["reference"]
    cands = metrics["candidates"]
    ref = cands[ref_name]["all"]

    def figures(name: str) -> str:
        a = cands[name]["all"]
        return (f"{name}: {a['new_onset_warned']}/{a['new_onset']} new-onset and {a['warned']}/{a['events']} events "
                f"warned, {figure(a['false_per_hour'])} false advisory episodes/h, "
                f"{figure(a['time_under_advisory'], '.1%')} of the time under advisory")

    wins, verdicts = [], []
    for name, c in cands.items():
        if c["type"] != "learned":
            continue
        a, ci = c["all"], (c.get("vs_reference") or {}).get("new_onset_warned_share")
        if (a["false_per_hour"] or 0.0) > budget["false_per_hour"]:
            verdicts.append(f"{name} is over the budget of {budget['false_per_hour']:g} false advisory episodes/h "
                            f"({figure(a['false_per_hour'])})")
        elif (a["time_under_advisory"] or 0.0) > budget["time_under_advisory"]:
            verdicts.append(f"{name} is over the budget of {budget['time_under_advisory']:.0%} of the time under "
                            f"advisory ({figure(a['time_under_advisory'], '.1%')})")
        elif a["new_onset_warned"] <= ref["new_onset_warned"]:
            verdicts.append(f"{name} warns no more new-onset events ({a['new_onset_warned']} vs "
                            f"{ref['new_onset_warned']})")
        elif ci is None or ci[0] <= 0:
            verdicts.append(f"{name}'s bootstrap interval of the difference in new-onset events warned includes 0 "
                            f"({'none' if ci is None else f'{ci[0]:+.2f} to {ci[2]:+.2f}'})")
        else:
            wins.append(name)
    def rates(name: str) -> dict[str, float | None]:  # what the service's monitoring compares the live rate with
        return {k: cands[name]["all"].get(k) for k in RATES}

    if wins:
        best = max(wins, key=lambda n: (cands[n]["all"]["new_onset_warned"], -cands[n]["all"]["false_per_hour"]))
        ci = cands[best]["vs_reference"]["new_onset_warned_share"]
        why = (f"the learned {best} beats the best baseline on {source}: {figures(best)}; against {figures(ref_name)}; "
               f"difference in new-onset events warned {ci[0]:+.2f} to {ci[2]:+.2f} (95% patient bootstrap)")
        return {"source": best, "type": "learned", "decided_on": source, "why": why, "baseline": ref_name,
                "rates": rates(best), "baseline_rates": rates(ref_name)}
    why = (f"no learned model beats the best baseline on {source}, so the baseline advises: {figures(ref_name)}. "
           + ("; ".join(verdicts) + "." if verdicts else "No learned candidate was evaluated."))
    return {"source": ref_name, "type": cands[ref_name]["type"], "decided_on": source, "why": why,
            "baseline": ref_name, "rates": rates(ref_name), "baseline_rates": rates(ref_name)}


def figure(v: float | None, spec: str = ".2f") -> str:
    """A figure as text: "-" where there is none (no denominator, nothing finite)."""
    return "-" if v is None or not np.isfinite(v) else format(v, spec)
