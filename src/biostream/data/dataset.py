"""A labelled dataset: what the `generate` and `ingest_vitaldb` stages both produce, built by one function.

`build_dataset` takes per-second signals (and ground-truth events when there are any), applies the alarm
rules (`biostream.data.labels`), assigns patient-level splits and returns the four tables of
`biostream.data.schema`. `write_dataset` / `read_dataset` store them as Parquet; `summarize` gives the manifest
numbers a stage reports as DVC metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from biostream.core.config import Configs, LabelParams, SplitParams
from biostream.core.io import atomic_dir, write_parquet
from biostream.data.labels import label_recordings, rule_episodes
from biostream.data.schema import (
    ALARM_EVENTS_SCHEMA,
    EVENT_CLASSES,
    EVENTS_SCHEMA,
    PATIENTS_SCHEMA,
    SPLITS,
    alarm_column,
    check_vitals,
    empty_frame,
    to_arrow,
    vitals_schema,
)
from biostream.data.splits import assign_splits
from biostream.data.truth import truth_columns, with_rule_episodes

FILES = {
    "vitals": "vitals.parquet",
    "events": "events.parquet",
    "alarm_events": "alarm_events.parquet",
    "patients": "patients.parquet",
}


@dataclass(frozen=True)
class Dataset:
    vitals: pd.DataFrame
    events: pd.DataFrame
    alarm_events: pd.DataFrame
    patients: pd.DataFrame


def build_dataset(
    signals_df: pd.DataFrame,
    patients: pd.DataFrame,
    configs: Configs,
    labels: LabelParams,
    splits: SplitParams,
    events: pd.DataFrame | None = None,
    interval_s: int = 1,
) -> Dataset:
    """Label, split and type a dataset.

    `signals_df`: `patient_id`, `time_s` and every canonical signal, sorted by patient and time. `events`: the
    injected events of a synthetic cohort (EVENTS_SCHEMA), completed with the rule episodes outside them; without
    `events` the ground truth is the rule episodes alone (`biostream.data.truth`).
    `patients`: `patient_id`, `source`, `hours`, `bp_mode`.
    """
    keys = configs.signals.keys
    schema = vitals_schema(keys, [r.kind for r in configs.rules])
    if signals_df.empty:
        return empty_dataset(configs)
    alarms = label_recordings(signals_df, configs.rules, labels.early_warning_horizon_s, interval_s)
    episodes = rule_episodes(signals_df, alarms, configs.rules, interval_s)
    events = episodes if events is None else with_rule_episodes(events, episodes)
    truth = truth_columns(signals_df["patient_id"].to_numpy(), signals_df["time_s"].to_numpy(), events)
    counts = events.groupby("patient_id").size()
    patients = patients.assign(n_events=patients["patient_id"].map(counts).fillna(0).astype(np.int32))
    split_of = assign_splits(patients["patient_id"].tolist(), splits)
    vitals = pd.DataFrame(
        {
            "patient_id": signals_df["patient_id"].to_numpy(),
            "time_s": signals_df["time_s"].to_numpy(np.int32),
            "split": signals_df["patient_id"].map(split_of).to_numpy(),
            **{s: signals_df[s].to_numpy(np.float32) for s in keys},
            **truth,
            **alarms.columns,
        }
    )[schema.names]
    check_vitals(vitals, keys)
    patients = patients.assign(split=patients["patient_id"].map(split_of))[PATIENTS_SCHEMA.names]
    return Dataset(
        vitals=vitals,
        events=events[EVENTS_SCHEMA.names].reset_index(drop=True),
        alarm_events=alarms.alarm_events[ALARM_EVENTS_SCHEMA.names],
        patients=patients.reset_index(drop=True),
    )


def empty_dataset(configs: Configs) -> Dataset:
    schema = vitals_schema(configs.signals.keys, [r.kind for r in configs.rules])
    return Dataset(
        vitals=empty_frame(schema),
        events=empty_frame(EVENTS_SCHEMA),
        alarm_events=empty_frame(ALARM_EVENTS_SCHEMA),
        patients=empty_frame(PATIENTS_SCHEMA),
    )


def write_dataset(ds: Dataset, out_dir: str | Path, configs: Configs) -> None:
    """Write the four tables into `out_dir`, replacing it whole only when every file is written."""
    schemas = {
        "vitals": vitals_schema(configs.signals.keys, [r.kind for r in configs.rules]),
        "events": EVENTS_SCHEMA,
        "alarm_events": ALARM_EVENTS_SCHEMA,
        "patients": PATIENTS_SCHEMA,
    }
    with atomic_dir(out_dir) as tmp:
        for name, fname in FILES.items():
            write_parquet(to_arrow(getattr(ds, name), schemas[name], name), tmp / fname)


def read_dataset(path: str | Path) -> Dataset:
    path = Path(path)
    missing = [f for f in FILES.values() if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path}: missing {', '.join(missing)}; run `dvc repro` to produce the dataset first"
        )
    return Dataset(**{name: pq.read_table(path / f).to_pandas() for name, f in FILES.items()})


def summarize(ds: Dataset, configs: Configs) -> dict[str, Any]:
    """The numbers a dataset manifest reports (all plain numbers, so `dvc metrics` can diff them)."""
    v = ds.vitals
    hours = float(ds.patients["hours"].sum()) if len(ds.patients) else 0.0
    per_hour = (lambda count: round(count / hours, 4)) if hours > 0 else (lambda count: None)
    alarm_counts = ds.alarm_events.groupby("kind").size()

    def frac(col: str) -> float | None:  # None (JSON null) when there is no data to take a fraction of
        return round(float(v[col].mean()), 4) if len(v) else None

    event_counts = ds.events.groupby("kind").size()
    class_counts = ds.events.groupby("event_class").size()
    return {
        "patients": int(len(ds.patients)),
        "hours": round(hours, 3),
        "rows": int(len(v)),
        "patients_per_split": {s: int((ds.patients["split"] == s).sum()) for s in SPLITS},
        "missing_fraction": {
            s: round(float(v[s].isna().mean()), 4) if len(v) else None for s in configs.signals.keys
        },
        "label_fraction": frac("label"),
        "artefact_fraction": frac("artefact"),
        "events": int(len(ds.events)),
        "events_by_kind": {str(k): int(c) for k, c in event_counts.items()},
        "events_by_class": {c: int(class_counts.get(c, 0)) for c in EVENT_CLASSES},
        "alarm_events": int(len(ds.alarm_events)),
        "alarms_per_hour": per_hour(len(ds.alarm_events)),
        "alarms_per_hour_by_kind": {r.kind: per_hour(int(alarm_counts.get(r.kind, 0))) for r in configs.rules},
        "alarm_second_fraction": {r.kind: frac(alarm_column(r.kind)) for r in configs.rules},
    }
