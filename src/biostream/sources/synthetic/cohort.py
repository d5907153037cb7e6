"""The synthetic cohort: every patient simulated from its own seed, with its events and labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from biostream.core.config import SignalCatalog
from biostream.data.schema import EVENTS_SCHEMA, empty_frame
from biostream.sources.synthetic.params import CohortParams, Physiology
from biostream.sources.synthetic.patient import simulate_patient


@dataclass(frozen=True)
class Cohort:
    vitals: pd.DataFrame  # patient_id, time_s, signals
    events: pd.DataFrame  # EVENTS_SCHEMA: the injected events (`build_dataset` adds the rule-defined ones)
    patients: pd.DataFrame  # patient_id, hours, bp_mode, setting, n_events (the written table's schema has no
    # setting column: there an ICU patient is the one with bp_mode "none")


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
        for ev in rec.events:
            event_rows.append({"event_id": next_event, "patient_id": ids[i], **ev})
            next_event += 1
        frame = {"patient_id": np.full(n, ids[i], dtype=object), "time_s": np.arange(n, dtype=np.int32)}
        frame.update({s: rec.signals[s] for s in catalog.keys})
        frames.append(pd.DataFrame(frame))
        patient_rows.append(
            {"patient_id": ids[i], "hours": n / 3600.0, "bp_mode": rec.bp_mode, "setting": rec.setting,
             "n_events": len(rec.events)}
        )
    events = pd.DataFrame(event_rows) if event_rows else empty_frame(EVENTS_SCHEMA)
    return Cohort(
        vitals=pd.concat(frames, ignore_index=True),
        events=events[EVENTS_SCHEMA.names],
        patients=pd.DataFrame(patient_rows),
    )

