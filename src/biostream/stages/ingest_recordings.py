"""Stages `ingest_recordings` and `ingest_real`: recordings (CSV or Parquet, one file per case), labelled like every
dataset.

`dataset: recordings` reads your own recordings (`params.yaml: ingest_recordings`); `dataset: real` the project's
real reference recordings (`params.yaml: ingest_real`, data/external/real/README.md); both through
`biostream.sources.recordings`. A file that cannot be used is skipped and listed under `failures`, the others kept.
With no file, the stage writes an empty, correctly typed dataset and says so; `require_data: true` makes that an
error (exit status 2, nothing written).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from biostream.core.config import Configs
from biostream.core.io import write_json
from biostream.core.params import Params
from biostream.core.runtime import progress_enabled, timed
from biostream.data.dataset import build_dataset, summarize, write_dataset
from biostream.sources.canonical import canonical_frame
from biostream.sources.recordings import SOURCES, ingest_recordings
from biostream.stages import StageError, help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths:
    out: Path = field(metadata=help_of("output folder (vitals, events, alarm_events, patients)"))
    metrics: Path = field(metadata=help_of("manifest JSON, a DVC metrics file"))
    dataset: str = field(default="recordings", metadata={
        "choices": sorted(SOURCES), "help": "recordings: params.yaml ingest_recordings; real: params.yaml ingest_real"})
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Read, map, clean and label the recordings; write the dataset and its manifest (returned)."""
    section = "ingest_recordings" if paths.dataset == "recordings" else f"ingest_{paths.dataset}"
    p = getattr(params, section)
    configs = Configs.load(paths.signals, paths.alarms)
    with timed(log, "reading recordings"):
        result = ingest_recordings(p, configs.signals,
                                   lambda it, n: tqdm(it, total=n, desc=paths.dataset, disable=not progress_enabled()),
                                   source=paths.dataset)
    with timed(log, "mapping, cleaning and labelling"):
        signals_df, patients, clean = canonical_frame(result.cases, configs.signals, 1, p.carry_forward_s, p.hold_s)
        ds = build_dataset(signals_df, patients, configs, params.labels,
                           params.splits, interval_s=1)
    status = "ok" if len(ds.patients) else "empty"
    manifest = {"dataset": paths.dataset, "status": status, "reasons": result.notes, "cases": int(len(ds.patients)),
                "failed_cases": len(result.failures), "failures": result.failures,
                "ignored_columns": result.ignored_columns, "cleaned_values": clean.counts,
                "cleaned_values_total": clean.total(), **summarize(ds, configs)}
    if status == "empty":
        msg = f"no {paths.dataset} recordings: " + "; ".join(result.notes + [f["error"] for f in result.failures])
        if p.require_data:
            log.error("%s. %s.require_data is true: failing. Put CSV or Parquet recordings in %s.", msg, section,
                      p.folder)
            raise StageError(f"{section}: {msg}", code=2)
        log.info("%s; writing an empty dataset (put CSV or Parquet recordings in %s to use them)", msg, p.folder)
    write_dataset(ds, paths.out, configs)
    write_json(manifest, paths.metrics)
    log.info("%d recordings, %.1f hours, %d failed, %d values cleaned; wrote %s and %s", len(ds.patients),
             manifest["hours"], len(result.failures), clean.total(), paths.out, paths.metrics)
    return manifest
