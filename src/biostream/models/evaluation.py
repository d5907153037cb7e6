"""What clinicians read: alarm post-processing and event-level metrics, as pure functions.

Scores arrive per scored second of whole recordings (`patient_id`, `time_s`, sorted, 1-s grid). An
`AlarmPolicy` turns scores into alarms the way a monitor would (Merlion's `AggregateAlarms` idea): a
second is "above" when its score exceeds the threshold; an alarm is on once k of the last n seconds were
above; alarms starting less than `refractory_s` after the previous one ended are merged into it (the
monitor does not re-alarm). The policy is separate from the model and re-tunable without retraining.

`event_metrics` then scores alarm episodes against ground-truth events:
* an event is caught when an alarm episode overlaps it, or starts at most `tolerance_s` before it;
* an alarm episode is true when it overlaps an event (extended the same way), false otherwise;
* false alarms per patient-hour, event recall and precision, event F1, median detection delay
  (first overlapping alarm start minus event start; negative = early), and recall per event kind.
With `include_artefacts=False`, artefact events are neither to be caught nor count as true alarms, and
alarm episodes that touch only artefacts are left out of both counts. Per-second metrics (`point_metrics`)
follow the same rule (`second_labels`, `second_metrics`): with artefacts, a second inside an artefact is a positive (an
event to catch); without, artefact seconds are left out.
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
    breaks: np.ndarray | None = None,
) -> np.ndarray:
    """Per-second alarm state (int8) after the k-of-n rule and refractory merging. `breaks`: the rows'
    `segment_starts`, when the caller has them (a study scores the same rows at many thresholds)."""
    if breaks is None:
        breaks = segment_starts(np.asarray(patient_id), np.asarray(time_s))
    above = np.asarray(scores) > threshold
    on = _rolling_count(above, breaks, policy.n) >= policy.k
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


def event_metrics(
    episodes: pd.DataFrame,
    events: pd.DataFrame,
    hours: float,
    tolerance_s: int,
    include_artefacts: bool = True,
) -> dict[str, Any]:
    """Event-level scores of alarm episodes against ground-truth events of the same patients."""
    ev = events if include_artefacts else events[events["category"] != "artefact"]
    artefacts = events[events["category"] == "artefact"] if not include_artefacts else events.iloc[:0]
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
    art_ep, _ = _overlaps(ep_pid, ep_start, ep_end, artefacts, lead_s=0)
    ignored = np.zeros(len(episodes), dtype=bool)
    ignored[art_ep] = True
    ignored &= ~true_alarm  # an episode that catches an event counts, whatever else it touches
    counted = ~ignored
    n_alarms = int(counted.sum())
    false_alarms = int((counted & ~true_alarm).sum())
    recall = float(caught.mean()) if len(ev) else float("nan")
    precision = float(true_alarm[counted].mean()) if n_alarms else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if n_alarms and len(ev) and precision + recall > 0 else 0.0
    kinds = ev.assign(caught=caught).groupby("kind")["caught"].mean() if len(ev) else pd.Series(dtype=float)
    return {
        "events": int(len(ev)),
        "alarms": n_alarms,
        "event_recall": recall,
        "event_precision": precision,
        "event_f1": float(f1),
        "false_alarms": false_alarms,
        "false_alarms_per_hour": false_alarms / hours if hours > 0 else float("nan"),
        "alarms_per_hour": n_alarms / hours if hours > 0 else float("nan"),
        "median_delay_s": float(np.nanmedian(delay)) if caught.any() else float("nan"),
        "recall_by_kind": {str(k): float(v) for k, v in kinds.items()},
    }


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


def second_labels(rows: pd.DataFrame, include_artefacts: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-second ground truth that agrees with `event_metrics`: (positive, counted) boolean arrays over the
    rows (`label`, `artefact` columns). With artefacts, a second inside an artefact is positive, as the
    artefact is an event to catch; without, artefact seconds are not counted (neither positive nor negative).
    Counting them as negatives would reward a detector per event and punish it per second for the same alarm."""
    label = rows["label"].to_numpy() > 0
    artefact = rows["artefact"].to_numpy() > 0
    if include_artefacts:
        return label | artefact, np.ones(len(rows), dtype=bool)
    return label, ~artefact


def second_metrics(rows: pd.DataFrame, scores: np.ndarray, alarms: np.ndarray,
                   include_artefacts: bool) -> dict[str, float]:
    """`point_metrics` of per-second scores and alarms over rows, with the ground truth of `second_labels`."""
    positive, counted = second_labels(rows, include_artefacts)
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


def evaluate_scores(
    rows: pd.DataFrame, events: pd.DataFrame, scores: np.ndarray, threshold: float, policy: AlarmPolicy
) -> tuple[dict[str, Any], np.ndarray]:
    """All metrics of one detector's scores on a dataset's evaluation rows (a feature table's meta columns,
    every second of whole recordings), and the per-second alarms: point metrics, event metrics (with and
    without artefacts) after the alarm policy, and the early-warning AUROC (an alarm event starts within the
    horizon; seconds already in alarm left out)."""
    pid, t = rows["patient_id"].to_numpy(), rows["time_s"].to_numpy()
    alarm = apply_policy(pid, t, scores, threshold, policy)
    episodes = alarm_episodes(pid, t, alarm)
    hours = len(rows) / 3600.0
    out: dict[str, Any] = {
        "point": second_metrics(rows, scores, alarm, include_artefacts=True),
        "point_without_artefacts": second_metrics(rows, scores, alarm, include_artefacts=False),
        "events": event_metrics(episodes, events, hours, policy.tolerance_s, include_artefacts=True),
        "events_without_artefacts": event_metrics(episodes, events, hours, policy.tolerance_s,
                                                  include_artefacts=False),
    }
    quiet = rows["alarm"].to_numpy() == 0
    ew = rows["ew_any"].to_numpy()[quiet]
    out["early_warning_auroc"] = float(roc_auc_score(ew, scores[quiet])) if 0 < ew.sum() < len(ew) else None
    return out, alarm
