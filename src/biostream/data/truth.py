"""The ground truth of a dataset: its events table, and the per-second columns painted from it.

For the synthetic cohort the events are the injected ones plus the rule-defined episodes outside them
(`with_rule_episodes`): a MAP held under 65 for a minute during an unlabelled stretch of low pressure is a
hypotension to a clinician and to the bedside monitor, so it is an event to catch; one that overlaps a
physiological injected event extends it (whatever artefact also falls inside it); one that overlaps only technical
events (a probe off reading 60 % for 20 s) is the artefact's doing and is not an event. For real recordings the
rule episodes are the whole truth.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from biostream.data.schema import EVENTS_SCHEMA, NO_EVENT, NO_KIND, PHYSIOLOGICAL, TECHNICAL


def with_rule_episodes(injected: pd.DataFrame, rules: pd.DataFrame) -> pd.DataFrame:
    """Injected events and the rule episodes (`biostream.data.labels.rule_episodes`) outside them, sorted by patient
    and start and numbered from 0."""
    events = injected.copy()
    added = []
    for pid, eps in rules.groupby("patient_id", sort=False):
        mine = events.index[events["patient_id"] == pid]
        for ep in eps.itertuples(index=False):
            hit = mine[(events.loc[mine, "start_s"] < ep.end_s).to_numpy()
                       & (events.loc[mine, "end_s"] > ep.start_s).to_numpy()]
            physio = hit[(events.loc[hit, "event_class"] == PHYSIOLOGICAL).to_numpy()]
            if len(physio):  # the patient's doing, whatever artefact falls inside it too
                events.loc[physio, "start_s"] = np.minimum(events.loc[physio, "start_s"], ep.start_s)
                events.loc[physio, "end_s"] = np.maximum(events.loc[physio, "end_s"], ep.end_s)
            elif not len(hit):
                added.append(ep._asdict())
    if added:
        events = pd.concat([events, pd.DataFrame(added)], ignore_index=True)
    events = events.sort_values(["patient_id", "start_s"], kind="stable", ignore_index=True)
    events["event_id"] = np.arange(len(events), dtype=np.int32)
    return events[EVENTS_SCHEMA.names]


def truth_columns(patient_id: np.ndarray, time_s: np.ndarray, events: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per row (patient-second, sorted by patient and time): `label` 1 inside a physiological event, `artefact` 1
    inside a technical one, `anomaly_kind`, `event_id` (-1 outside events; a later event wins an overlap)."""
    n = len(patient_id)
    event_id = np.full(n, NO_EVENT, dtype=np.int32)
    bounds = np.flatnonzero(np.r_[True, patient_id[1:] != patient_id[:-1], True]) if n else np.array([0])
    rows = {patient_id[a]: (a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)}
    for ev in events.itertuples(index=False):
        if ev.patient_id not in rows:
            continue
        a, b = rows[ev.patient_id]
        lo, hi = np.searchsorted(time_s[a:b], [ev.start_s, ev.end_s])
        event_id[a + lo : a + hi] = ev.event_id
    inside = event_id >= 0
    by_id = events.set_index("event_id")
    kind = np.full(n, NO_KIND, dtype=object)
    cls = np.full(n, "", dtype=object)
    if inside.any():
        kind[inside] = by_id["kind"].reindex(event_id[inside]).to_numpy()
        cls[inside] = by_id["event_class"].reindex(event_id[inside]).to_numpy()
    return {
        "label": (cls == PHYSIOLOGICAL).astype(np.int8),
        "artefact": (cls == TECHNICAL).astype(np.int8),
        "anomaly_kind": kind,
        "event_id": event_id,
    }
