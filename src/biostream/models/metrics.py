"""What clinicians read: event-level metrics of alarm episodes, physiological and technical apart.

Scores arrive per scored second of whole recordings (`patient_id`, `time_s`, sorted, 1-s grid), 0 at the alarm
threshold, with each second's class (`biostream.models.floor.Outputs`); `biostream.models.alarms` turns them into
alarm episodes of one class each, as a monitor would. `event_metrics` scores one class's episodes against the
events of that class; `rule_event_metrics` is the bedside view: how BioStream is scored on real recordings, where
the rules define the events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from biostream.data.labels import find_runs, segment_starts
from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL
from biostream.models.alarms import CLASSES, AlarmPolicy, alarm_episodes, apply_policy, class_alarms
from biostream.models.objective import Objective


def event_metrics(
    episodes: pd.DataFrame,
    events: pd.DataFrame,
    hours: float,
    tolerance_s: int,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Event-level scores of one class's alarm episodes against the events of that class, same patients.

    * an event is caught when an alarm episode overlaps it, or starts at most `tolerance_s` before it;
    * an alarm episode is true when it overlaps an event of its class (extended the same way), false otherwise (a
      physiological alarm on a probe off is a false physiological alarm: the clinician is sent to the patient);
    * false alarms per patient-hour, event recall and precision, event F1, median detection delay (first
      overlapping alarm start minus event start; negative = early), recall per kind (an event of several rule kinds,
      'a+b', counts for each), and with an `Objective` the clinically weighted recall and F1.
    """
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
    """The bedside view, how BioStream is scored on real recordings, where the rules define the events: rule events
    (ALARM_EVENTS_SCHEMA rows of these patients: each rule kind's runs, however caused) caught by an alarm of either
    class, alarm episodes per hour, and the AUROC of the score against the seconds inside a rule
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
