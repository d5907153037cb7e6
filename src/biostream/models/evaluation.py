"""What clinicians read: alarm post-processing and event-level metrics, physiological and technical apart.

Scores arrive per scored second of whole recordings (`patient_id`, `time_s`, sorted, 1-s grid), 0 at the alarm
threshold, with each second's class (`biostream.models.floor.Outputs`). An `AlarmPolicy` turns them into alarms
the way a monitor would (Merlion's `AggregateAlarms` idea): a second is "above" when its score exceeds the
threshold; an alarm is on once k of the last n seconds were above, or at once where a bedside rule fires (it has
held for its duration already: the monitor's alarm delay); alarms starting less than `refractory_s` after the
previous one ended are merged into it (the monitor does not re-alarm). Each alarm episode then takes the class
of most of its seconds (`class_alarms`): physiological and technical alarms are reported apart, and one alarm is
never split in two.

`event_metrics` scores one class's alarm episodes against the events of that class:
* an event is caught when an alarm episode overlaps it, or starts at most `tolerance_s` before it;
* an alarm episode is true when it overlaps an event of its class (extended the same way), false otherwise (a
  physiological alarm on a probe off is a false physiological alarm: the clinician is sent to the patient);
* false alarms per patient-hour, event recall and precision, event F1, median detection delay (first
  overlapping alarm start minus event start; negative = early), recall per kind (an event of several rule kinds,
  'a+b', counts for each), and with an `Objective` the clinically weighted recall and F1.

`rule_event_metrics` is the bedside view of the same scores: the rule-defined events (each rule kind's runs,
however caused), caught by an alarm of either class, alarm episodes of both classes per hour, and the AUROC of
the score against "inside a rule event": how BioStream is scored on real recordings, where the rules define the
events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from biostream.core.config import ConfigError, require
from biostream.data.labels import Runs, fill_runs, find_runs, segment_starts
from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL


@dataclass(frozen=True)
class AlarmPolicy:
    """`params.yaml: alarms`: k of n seconds above threshold, refractory period, event tolerance."""

    k: int
    n: int
    refractory_s: int
    tolerance_s: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AlarmPolicy:
        w = "params.yaml: alarms"
        sec = require(params, "alarms", "params.yaml")
        out = cls(*(int(require(sec, key, w)) for key in ("k", "n", "refractory_s", "tolerance_s")))
        if not 1 <= out.k <= out.n:
            raise ConfigError(f"{w}: need 1 <= k <= n, got k={out.k}, n={out.n}")
        if out.refractory_s < 0 or out.tolerance_s < 0:
            raise ConfigError(f"{w}: refractory_s and tolerance_s must be >= 0")
        return out

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _rolling_count(flags: np.ndarray, breaks: np.ndarray, n: int) -> np.ndarray:
    """Number of True among the last n rows (this one included), not crossing a segment start."""
    c = np.concatenate([[0], np.cumsum(flags, dtype=np.int64)])
    idx = np.arange(len(flags))
    seg_start = np.maximum.accumulate(np.where(breaks, idx, 0))
    lo = np.maximum(idx - n + 1, seg_start)
    return c[idx + 1] - c[lo]


def apply_policy(
    patient_id: np.ndarray, time_s: np.ndarray, scores: np.ndarray, threshold: float, policy: AlarmPolicy,
    breaks: np.ndarray | None = None, immediate: np.ndarray | None = None,
) -> np.ndarray:
    """Per-second alarm state (int8) after the k-of-n rule and refractory merging. `breaks`: the rows'
    `segment_starts`, when the caller has them (a study scores the same rows at many thresholds). `immediate`:
    seconds that are on at once, without the k-of-n delay (a bedside rule that fires has already held for its
    duration, the monitor's own alarm delay)."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    above = np.asarray(scores) > threshold
    on = _rolling_count(above, breaks, policy.n) >= policy.k
    if immediate is not None:
        on |= np.asarray(immediate, dtype=bool)
    runs = find_runs(on, breaks)
    if len(runs.start) > 1 and policy.refractory_s > 0:
        t = np.asarray(time_s)
        seg = np.cumsum(breaks)
        gap = t[runs.start[1:]] - t[runs.stop[:-1] - 1]
        merge = (gap <= policy.refractory_s) & (seg[runs.start[1:]] == seg[runs.stop[:-1] - 1])
        keep_start = np.concatenate([[True], ~merge])
        keep_stop = np.concatenate([~merge, [True]])
        runs = Runs(runs.start[keep_start], runs.stop[keep_stop])
    return fill_runs(len(on), runs)


def alarm_episodes(patient_id: np.ndarray, time_s: np.ndarray, alarm: np.ndarray,
                   breaks: np.ndarray | None = None) -> pd.DataFrame:
    """Alarm episodes: patient_id, start_s, end_s (exclusive). `breaks` as for `apply_policy`."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    runs = find_runs(np.asarray(alarm, dtype=bool), breaks)
    t = np.asarray(time_s)
    return pd.DataFrame({
        "patient_id": np.asarray(patient_id)[runs.start],
        "start_s": t[runs.start],
        "end_s": t[runs.stop - 1] + 1,
    })


@dataclass(frozen=True)
class Objective:
    """`params.yaml: objective` with `configs/alarms.yaml`'s weights: what a missed event of each kind costs, and the
    metric that studies, thresholds and the registry maximise (a path into `evaluate_scores`' metrics)."""

    metric: str
    kind_weights: Mapping[str, float]
    other_weight: float  # a physiological kind no rule defines (a drift, a level shift)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], rules: Any) -> Objective:
        w = "params.yaml: objective"
        sec = require(params, "objective", "params.yaml")
        out = cls(str(require(sec, "metric", w)), {r.kind: float(r.weight) for r in rules},
                  float(require(sec, "other_weight", w)))
        if not out.metric.startswith(("physiological.", "technical.", "rule_events.", "point.")):
            raise ConfigError(f"{w}.metric: '{out.metric}' is not a path into the metrics (physiological.weighted_f1, "
                              "technical.event_f1, rule_events.recall, point.auprc, ...)")
        if out.other_weight < 0:
            raise ConfigError(f"{w}.other_weight: must be >= 0, got {out.other_weight}")
        return out

    def weight(self, kind: str) -> float:
        """The weight of an event kind ('a+b': the largest of its parts)."""
        return max(self.kind_weights.get(k, self.other_weight) for k in str(kind).split("+"))

    def value(self, metrics: Mapping[str, Any]) -> float:
        """The objective's value in a metrics dict (NaN when undefined)."""
        v: Any = metrics
        for key in self.metric.split("."):
            if not isinstance(v, Mapping) or key not in v:
                raise KeyError(f"objective.metric '{self.metric}' is not in the metrics (no '{key}')")
            v = v[key]
        return float("nan") if v is None else float(v)


def event_metrics(
    episodes: pd.DataFrame,
    events: pd.DataFrame,
    hours: float,
    tolerance_s: int,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Event-level scores of one class's alarm episodes against the events of that class, same patients."""
    ev = events
    # every (episode, event) pair of the same patient at once, not episode by episode: a calibration tries
    # low thresholds too, with thousands of episodes
    ep_pid = episodes["patient_id"].to_numpy()
    ep_start, ep_end = episodes["start_s"].to_numpy(), episodes["end_s"].to_numpy()
    hit_ep, hit_ev = _overlaps(ep_pid, ep_start, ep_end, ev, lead_s=tolerance_s)
    true_alarm = np.zeros(len(episodes), dtype=bool)
    true_alarm[hit_ep] = True
    caught = np.zeros(len(ev), dtype=bool)
    caught[hit_ev] = True
    delay = np.full(len(ev), np.nan)  # the earliest overlapping alarm's start minus the event's start
    if len(hit_ev):
        lag = (ep_start[hit_ep] - ev["start_s"].to_numpy()[hit_ev]).astype(np.float64)
        np.fmin.at(delay, hit_ev, lag)
    n_alarms = len(episodes)
    false_alarms = int((~true_alarm).sum())
    recall = float(caught.mean()) if len(ev) else float("nan")
    precision = float(true_alarm.mean()) if n_alarms else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if n_alarms and len(ev) and precision + recall > 0 else 0.0
    kinds = ev["kind"].astype(str).str.split("+").to_numpy() if len(ev) else []
    per_kind = pd.DataFrame({"kind": [k for ks in kinds for k in ks],
                             "caught": np.repeat(caught, [len(ks) for ks in kinds]) if len(ev) else []})
    out = {
        "events": int(len(ev)),
        "alarms": n_alarms,
        "event_recall": recall,
        "event_precision": precision,
        "event_f1": float(f1),
        "false_alarms": false_alarms,
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else float("nan"),
        "alarms_per_hour": n_alarms / hours if hours > 0 else float("nan"),
        "median_delay_s": float(np.nanmedian(delay)) if caught.any() else float("nan"),
        "recall_by_kind": {str(k): float(v) for k, v in per_kind.groupby("kind")["caught"].mean().items()},
        "events_by_kind": {str(k): int(v) for k, v in per_kind.groupby("kind").size().items()},
    }
    if objective is not None:
        w = np.array([objective.weight(k) for k in ev["kind"]]) if len(ev) else np.empty(0)
        wr = float((w * caught).sum() / w.sum()) if w.sum() > 0 else float("nan")
        wf1 = 2 * precision * wr / (precision + wr) if n_alarms and w.sum() > 0 and precision + wr > 0 else 0.0
        out.update(weighted_recall=wr, weighted_f1=float(wf1))
    return out


def _overlaps(ep_pid: np.ndarray, ep_start: np.ndarray, ep_end: np.ndarray, events: pd.DataFrame,
              lead_s: int) -> tuple[np.ndarray, np.ndarray]:
    """(episode index, event index) of every pair of the same patient where the episode overlaps the event
    or its `lead_s` seconds before: episode start < event end and episode end > event start - lead_s."""
    out_ep, out_ev = [np.empty(0, dtype=np.intp)], [np.empty(0, dtype=np.intp)]
    if len(ep_pid) and len(events):
        ev_pid = events["patient_id"].to_numpy()
        ev_start, ev_end = events["start_s"].to_numpy(), events["end_s"].to_numpy()
        for p in set(ep_pid.tolist()) & set(ev_pid.tolist()):
            e_idx, v_idx = np.flatnonzero(ep_pid == p), np.flatnonzero(ev_pid == p)
            hit = (ep_start[e_idx, None] < ev_end[None, v_idx]) & (ep_end[e_idx, None] > ev_start[None, v_idx] - lead_s)
            i, j = np.nonzero(hit)
            out_ep.append(e_idx[i])
            out_ev.append(v_idx[j])
    return np.concatenate(out_ep), np.concatenate(out_ev)


def second_labels(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per-second ground truth of the physiological class: (positive, counted) over the rows (`label`, `artefact`
    columns): a second inside a physiological event is positive, one inside a technical event is left out (an
    alarm there is the other class's business), every other second is negative."""
    label = rows["label"].to_numpy() > 0
    artefact = rows["artefact"].to_numpy() > 0
    return label, ~artefact


def second_metrics(rows: pd.DataFrame, scores: np.ndarray, alarms: np.ndarray) -> dict[str, float]:
    """`point_metrics` of per-second scores and (physiological) alarms over rows, with `second_labels`' truth."""
    positive, counted = second_labels(rows)
    return point_metrics(positive[counted], np.asarray(scores)[counted], np.asarray(alarms)[counted])


def point_metrics(labels: np.ndarray, scores: np.ndarray, alarms: np.ndarray) -> dict[str, float]:
    """Per-second AUROC, AUPRC, and precision, recall and F1 of the alarm state."""
    labels = np.asarray(labels).astype(bool)
    alarms = np.asarray(alarms).astype(bool)
    both = labels.any() and (~labels).any()
    tp = int((labels & alarms).sum())
    precision = tp / alarms.sum() if alarms.any() else float("nan")
    recall = tp / labels.sum() if labels.any() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if alarms.any() and labels.any() and tp else 0.0
    return {
        "auroc": float(roc_auc_score(labels, scores)) if both else float("nan"),
        "auprc": float(average_precision_score(labels, scores)) if both else float("nan"),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
    }


CLASSES = (PHYSIOLOGICAL, TECHNICAL)


def class_alarms(patient_id: np.ndarray, time_s: np.ndarray, outputs: Any, threshold: float, policy: AlarmPolicy,
                 breaks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-second alarm state of each class (int8): one alarm stream after the policy (k of n seconds above
    threshold, or at once where a bedside rule fires (`outputs.rules`), refractory merge), each of its episodes of
    one class: technical when most of its seconds above
    threshold are (`outputs.technical`), physiological otherwise (a patient event within an artefact keeps the
    alarm physiological). An alarm never splits into two because its seconds change class."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    above = np.asarray(outputs.score) > threshold
    rules = getattr(outputs, "rules", None)
    alarm = apply_policy(patient_id, time_s, above.astype(np.float64), 0.5, policy, breaks,
                         None if rules is None else np.asarray(rules) > threshold)
    runs = find_runs(alarm.astype(bool), breaks)
    episode = fill_runs(len(alarm), runs, np.arange(len(runs.start)), fill=-1)
    inside = (episode >= 0) & above
    technical = np.asarray(outputs.technical, dtype=bool)
    counts = np.bincount(episode[inside], minlength=len(runs.start))
    tech_counts = np.bincount(episode[inside & technical], minlength=len(runs.start))
    episode_technical = np.r_[tech_counts > counts / 2, False]  # index -1: no episode
    tech = (alarm > 0) & episode_technical[episode]
    return {PHYSIOLOGICAL: ((alarm > 0) & ~tech).astype(np.int8), TECHNICAL: tech.astype(np.int8)}


def class_metrics(patient_id: np.ndarray, time_s: np.ndarray, alarms: Mapping[str, np.ndarray], events: pd.DataFrame,
                  hours: float, tolerance_s: int, objective: Objective | None,
                  breaks: np.ndarray | None = None) -> dict[str, dict[str, Any]]:
    """`event_metrics` of each class's alarms against the events of that class (weighted for the physiological)."""
    out = {}
    for cls in CLASSES:
        episodes = alarm_episodes(patient_id, time_s, alarms[cls], breaks=breaks)
        out[cls] = event_metrics(episodes, events[events["event_class"] == cls], hours, tolerance_s,
                                 objective if cls == PHYSIOLOGICAL else None)
    return out


def rule_event_metrics(rows: pd.DataFrame, rule_events: pd.DataFrame, scores: np.ndarray, any_alarm: np.ndarray,
                       tolerance_s: int) -> dict[str, Any]:
    """The bedside view (the module docstring): rule events (ALARM_EVENTS_SCHEMA rows of these patients) caught by
    an alarm of either class, alarm episodes per hour, and the AUROC of the score against the seconds inside a rule
    event (`rows["alarm"]`)."""
    pid, t = rows["patient_id"].to_numpy(), rows["time_s"].to_numpy()
    episodes = alarm_episodes(pid, t, any_alarm)
    hours = len(rows) / 3600.0
    m = event_metrics(episodes, rule_events.assign(event_class=PHYSIOLOGICAL), hours, tolerance_s)
    inside = rows["alarm"].to_numpy() > 0
    auroc = float(roc_auc_score(inside, scores)) if 0 < inside.sum() < len(inside) else float("nan")
    return {"events": m["events"], "recall": m["event_recall"], "recall_by_kind": m["recall_by_kind"],
            "alarms_per_hour": m["alarms_per_hour"], "median_delay_s": m["median_delay_s"], "auroc": auroc}


def own_alarm_metrics(patient_id: np.ndarray, time_s: np.ndarray, alarms: Mapping[str, np.ndarray], rules: np.ndarray,
                      policy: AlarmPolicy, hours: float, breaks: np.ndarray | None = None) -> dict[str, Any]:
    """What a learned model adds to its floor: its alarm episodes (either class) that share no second with an alarm
    of the floor alone (the rules' score `rules` through the same policy), per patient-hour, by class."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    fired = np.asarray(rules) > 0
    floor = apply_policy(patient_id, time_s, fired.astype(np.float64), 0.5, policy, breaks, fired)
    either = (alarms[PHYSIOLOGICAL] | alarms[TECHNICAL]).astype(bool)
    runs = find_runs(either, breaks)
    c = np.concatenate([[0], np.cumsum(floor > 0)])
    own = (c[runs.stop] - c[runs.start]) == 0
    physiological = own & (alarms[PHYSIOLOGICAL][runs.start] > 0)
    n = {"alarms": int(own.sum()), "physiological": int(physiological.sum()),
         "technical": int((own & ~physiological).sum())}
    rate = {k: v / hours if hours > 0 else float("nan") for k, v in n.items()}
    return {"alarms": n["alarms"], "alarms_per_hour": rate["alarms"],
            "physiological_per_hour": rate["physiological"], "technical_per_hour": rate["technical"]}


def evaluate_scores(
    rows: pd.DataFrame, events: pd.DataFrame, outputs: Any, threshold: float, policy: AlarmPolicy,
    objective: Objective | None = None, rule_events: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All metrics of one detector's outputs on a dataset's evaluation rows (a feature table's meta columns, every
    second of whole recordings), and the per-second alarms of each class: per-second metrics of the physiological
    class, event metrics of each class after the alarm policy, the bedside view over `rule_events` (when given),
    the alarms the model adds to its floor (`own_alarm_metrics`), and the early-warning AUROC (an alarm event
    starts within the horizon; seconds already in alarm left out)."""
    pid, t = rows["patient_id"].to_numpy(), rows["time_s"].to_numpy()
    breaks = segment_starts(pid, t)
    scores = np.asarray(outputs.score)
    alarms = class_alarms(pid, t, outputs, threshold, policy, breaks)
    hours = len(rows) / 3600.0
    out: dict[str, Any] = {
        "point": second_metrics(rows, scores, alarms[PHYSIOLOGICAL]),
        **class_metrics(pid, t, alarms, events, hours, policy.tolerance_s, objective, breaks),
    }
    if rule_events is not None:
        out["rule_events"] = rule_event_metrics(rows, rule_events, scores,
                                                alarms[PHYSIOLOGICAL] | alarms[TECHNICAL], policy.tolerance_s)
    if getattr(outputs, "rules", None) is not None:
        out["own_alarms"] = own_alarm_metrics(pid, t, alarms, outputs.rules, policy, hours, breaks)
    quiet = rows["alarm"].to_numpy() == 0
    ew = rows["ew_any"].to_numpy()[quiet]
    out["early_warning_auroc"] = float(roc_auc_score(ew, scores[quiet])) if 0 < ew.sum() < len(ew) else None
    return out, alarms
