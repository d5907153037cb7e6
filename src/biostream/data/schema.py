"""The tables every dataset stage writes, with their column types, and their validation.

The synthetic cohort and every ingestion write the same four tables: ``vitals`` (one row per patient-second: the
canonical signals, float32 with NaN = missing, the ground truth and the clinical-alarm labels), ``events`` (the
ground-truth events, each physiological or technical: for real recordings, which have no annotation, the merged
rule-defined episodes), ``alarm_events`` (one row per alarm-rule event) and ``patients`` (one row per patient).
Their columns: docs/data.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

NO_EVENT = -1
NO_KIND = "none"
SPLITS = ("train", "val", "test")
PHYSIOLOGICAL, TECHNICAL = "physiological", "technical"  # the two classes of events and alarms
EVENT_CLASSES = (PHYSIOLOGICAL, TECHNICAL)
ADVISORY = "advisory"  # a warning that an event is likely soon (IEC 60601-1-8's lower priority): never an alarm


def alarm_column(kind: str) -> str:
    return f"alarm_{kind}"


def ew_column(kind: str) -> str:
    return f"ew_{kind}"


def vitals_schema(signals: Sequence[str], alarm_kinds: Sequence[str]) -> pa.Schema:
    """``vitals``: ``time_s`` counts from the start of the recording; ``label`` is 1 inside a physiological event,
    ``artefact`` 1 inside a technical one, ``event_id`` NO_EVENT outside events; ``alarm`` is any rule's label,
    ``alarm_<kind>`` one rule's, and ``ew_any`` / ``ew_<kind>`` the early warning (an alarm event starts within the
    horizon)."""
    fields = [
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("time_s", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
    fields += [pa.field(s, pa.float32()) for s in signals]
    fields += [
        pa.field("label", pa.int8(), nullable=False),
        pa.field("artefact", pa.int8(), nullable=False),
        pa.field("anomaly_kind", pa.string(), nullable=False),
        pa.field("event_id", pa.int32(), nullable=False),
        pa.field("alarm", pa.int8(), nullable=False),
    ]
    fields += [pa.field(alarm_column(k), pa.int8(), nullable=False) for k in alarm_kinds]
    fields += [pa.field("ew_any", pa.int8(), nullable=False)]
    fields += [pa.field(ew_column(k), pa.int8(), nullable=False) for k in alarm_kinds]
    return pa.schema(fields)


EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.int32(), nullable=False),
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("start_s", pa.int32(), nullable=False),  # first second inside the event
        pa.field("end_s", pa.int32(), nullable=False),  # first second after the event
        pa.field("kind", pa.string(), nullable=False),  # '+'-joined when rules of several kinds overlap
        pa.field("category", pa.string(), nullable=False),  # clinical | statistical | artefact | clinical_alarm
        pa.field("event_class", pa.string(), nullable=False),  # physiological | technical
        pa.field("signals", pa.string(), nullable=False),  # comma-separated signal keys
    ]
)

ALARM_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("alarm_event_id", pa.int32(), nullable=False),
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("start_s", pa.int32(), nullable=False),
        pa.field("end_s", pa.int32(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("signal", pa.string(), nullable=False),
        pa.field("extreme", pa.float32(), nullable=False),  # lowest (for "<") or highest value reached
    ]
)

PATIENTS_SCHEMA = pa.schema(
    [
        pa.field("patient_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # synthetic | vitaldb-api | vitaldb-local | ...
        pa.field("hours", pa.float64(), nullable=False),
        pa.field("bp_mode", pa.string(), nullable=False),  # arterial | nibp | none
        pa.field("n_events", pa.int32(), nullable=False),
    ]
)


class SchemaError(ValueError):
    """A table does not match the schema its stage promises."""


def to_arrow(df: pd.DataFrame, schema: pa.Schema, name: str) -> pa.Table:
    """Convert `df` to exactly `schema` (column order and types), or raise SchemaError naming the column."""
    missing = [f.name for f in schema if f.name not in df.columns]
    extra = [c for c in df.columns if c not in schema.names]
    if missing or extra:
        raise SchemaError(f"{name}: missing columns {missing}, unexpected columns {extra}")
    arrays = []
    for field in schema:
        col = df[field.name]
        if not field.nullable and col.isna().any():
            raise SchemaError(f"{name}.{field.name}: {int(col.isna().sum())} missing values in a required column")
        try:
            arrays.append(pa.array(col.to_numpy(), type=field.type, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(f"{name}.{field.name}: cannot store as {field.type}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=schema)


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    """A zero-row DataFrame whose columns have the schema's types."""
    return schema.empty_table().to_pandas()


def check_vitals(df: pd.DataFrame, signals: Sequence[str]) -> None:
    """Invariants of a vitals table that types alone do not express."""
    if df.empty:
        return
    bad_split = set(df["split"].unique()) - set(SPLITS)
    if bad_split:
        raise SchemaError(f"vitals.split: unknown values {sorted(bad_split)}; expected {SPLITS}")
    per_patient = df.groupby("split")["patient_id"].unique()
    seen: dict[str, str] = {}
    for split, ids in per_patient.items():
        for pid in ids:
            if pid in seen:
                raise SchemaError(f"vitals: patient {pid} is in both '{seen[pid]}' and '{split}' splits")
            seen[pid] = str(split)
    same = df["patient_id"].to_numpy()[1:] == df["patient_id"].to_numpy()[:-1]
    steps = np.diff(df["time_s"].to_numpy())[same]
    if steps.size and (steps.min() <= 0 or steps.max() != steps.min()):
        raise SchemaError("vitals.time_s: each patient's rows must be sorted on a regular grid")
    for s in signals:
        values = df[s].to_numpy()
        if np.isinf(values).any():
            raise SchemaError(f"vitals.{s}: infinite values; missing values must be NaN")
