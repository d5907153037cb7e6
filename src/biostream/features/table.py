"""The one loader of the `featurize` stage's folder: the input pipeline, and per data source its feature table
with the dataset it was computed from (raw vitals for the window and sequence views, ground-truth events).

Every stage that reads features (`tune`, `train`, `evaluate`, `register`) takes its rows from here, so a split,
its events and its raw vitals are always selected the same way.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow as pa

from biostream.core.io import atomic_dir, write_json, write_parquet
from biostream.core.params import Source, SourceParams  # noqa: F401 (SourceParams: params.yaml: its section)
from biostream.data.dataset import Dataset, read_dataset
from biostream.features.pipeline import InputPipeline
from biostream.features.readiness import learned_defined

PIPELINE_FILE = "input_pipeline.json"
SOURCES: tuple[str, ...] = typing.get_args(Source)  # the datasets a feature set may hold, as dvc.yaml names them


@dataclass(frozen=True)
class Part:
    """Feature rows of some patients (index reset), their ground-truth events, their rule-defined events (each
    rule's runs, ALARM_EVENTS_SCHEMA) and the raw vitals they were cut from (a source's whole table: `windows_at`
    finds each row's window in it)."""

    rows: pd.DataFrame
    events: pd.DataFrame
    vitals: pd.DataFrame
    rule_events: pd.DataFrame

    @property
    def hours(self) -> float:
        """Patient-hours of the rows (one row per scored second)."""
        return len(self.rows) / 3600.0


@dataclass
class FeatureSet:
    """`data/features` and the dataset folders it was computed from (`sources`: name -> folder), each source
    read on first use."""

    folder: Path
    sources: Mapping[str, Path]
    _loaded: dict[str, tuple[pd.DataFrame, Dataset]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, folder: str | Path, sources: Mapping[str, str | Path]) -> FeatureSet:
        folder = Path(folder)
        if not (folder / PIPELINE_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {PIPELINE_FILE}; run `dvc repro featurize` first")
        return cls(folder, {k: Path(v) for k, v in sources.items()})

    @cached_property
    def pipeline(self) -> InputPipeline:
        """What the table's feature columns describe: windows of this geometry, of these signals."""
        return InputPipeline.from_dict(json.loads((self.folder / PIPELINE_FILE).read_text(encoding="utf-8")))

    def source(self, name: str) -> tuple[pd.DataFrame, Dataset]:
        """(feature table, dataset) of a source."""
        if name not in self._loaded:
            if name not in self.sources:
                raise KeyError(f"unknown data source '{name}'; this feature set has {', '.join(self.sources)}")
            path = self.folder / f"{name}.parquet"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing; run `dvc repro featurize`")
            self._loaded[name] = (pd.read_parquet(path), read_dataset(self.sources[name]))
        return self._loaded[name]

    def part(self, source: str, split: str | None = None, *, normal_only: bool = False) -> Part:
        """The rows of one split of a source (None: every split), optionally only those without anomaly or
        artefact and with a learned score (what unsupervised detectors fit on), with their patients' events."""
        table, ds = self.source(source)
        keep = pd.Series(True, index=table.index) if split is None else table["split"] == split
        if normal_only:  # and with a learned score: what a learned detector fits on
            keep &= (table["label"] == 0) & (table["artefact"] == 0) & learned_defined(table)
        rows = table[keep].reset_index(drop=True)
        patients = rows["patient_id"].unique()
        events = ds.events[ds.events["patient_id"].isin(patients)].reset_index(drop=True)
        rule_events = ds.alarm_events[ds.alarm_events["patient_id"].isin(patients)].reset_index(drop=True)
        return Part(rows, events, ds.vitals, rule_events)

    def parts(self, sources: Sequence[str], split: str | None = None, *, normal_only: bool = False) -> Part:
        """`part` of several sources as one (patient ids are distinct across sources: `S0001`, `vitaldb-17`,
        `rec-case-3`, `real-bidmc_01_Numerics`), for learning from a mix; one source is its own part, not a copy."""
        parts = [self.part(s, split, normal_only=normal_only) for s in sources]
        if len(parts) == 1:
            return parts[0]
        return Part(*(pd.concat([getattr(p, f) for p in parts], ignore_index=True)
                      for f in ("rows", "events", "vitals", "rule_events")))

    def has_rows(self, source: str) -> bool:
        """Whether a source has any feature row (a dataset stage that found no case writes an empty one)."""
        return len(self.source(source)[0]) > 0


def write_feature_set(folder: str | Path, tables: Mapping[str, pd.DataFrame], pipeline: InputPipeline) -> None:
    """The `featurize` stage's folder, replaced whole: one `<source>.parquet` per feature table and the input
    pipeline that `FeatureSet` reads back."""
    with atomic_dir(folder) as tmp:
        for name, table in tables.items():
            write_parquet(pa.Table.from_pandas(table, preserve_index=False), tmp / f"{name}.parquet")
        write_json(pipeline.to_dict(), tmp / PIPELINE_FILE)
