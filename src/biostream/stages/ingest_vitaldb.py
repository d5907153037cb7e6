"""Stage `ingest_vitaldb`: real VitalDB cases, labelled like the synthetic cohort.

When no source yields a case (VitalDB's API unreachable, no local .vital files, empty cache) the stage writes an
empty, correctly typed dataset and a manifest with status "empty" and the reasons, and says so loudly; the pipeline
goes on with synthetic data. `ingest_vitaldb.require_data: true` makes that an error (exit status 2, nothing
written).
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
from biostream.sources.vitaldb import canonical_frame, ingest
from biostream.stages import StageError, help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths:
    out: Path = field(metadata=help_of("output folder (vitals, events, alarm_events, patients)"))
    metrics: Path = field(metadata=help_of("manifest JSON, a DVC metrics file"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Collect, map, clean and label the cases; write the dataset and its manifest (returned)."""
    p = params.ingest_vitaldb
    configs = Configs.load(paths.signals, paths.alarms)
    p.cache_dir.mkdir(parents=True, exist_ok=True)  # a DVC output, even when nothing gets downloaded

    def progress(it, total):
        return tqdm(it, total=total, desc="cases", disable=not progress_enabled())

    with timed(log, "collecting cases"):
        result = ingest(p, configs.signals, progress)
    with timed(log, "mapping, cleaning and labelling"):
        signals_df, patients, clean = canonical_frame(result.cases, configs.signals, p.interval_s, p.carry_forward_s)
        ds = build_dataset(
            signals_df, patients, configs, params.labels, params.splits,
            interval_s=p.interval_s,
        )
    status = "ok" if len(ds.patients) else "empty"
    sources = ds.patients["source"].value_counts()
    manifest = {
        "dataset": "vitaldb",
        "status": status,
        "reasons": result.notes,
        "cases_by_source": {s: int(sources.get(s, 0)) for s in ("vitaldb-local", "vitaldb-api", "vitaldb-cache")},
        "failed_cases": len(result.failures),
        "failures": result.failures,
        "cleaned_values": clean.counts,
        "cleaned_values_total": clean.total(),
        **summarize(ds, configs),
    }
    if status == "empty":
        msg = "NO VITALDB DATA: " + "; ".join(result.notes + [f["error"] for f in result.failures])
        if p.require_data:
            log.error("%s. ingest_vitaldb.require_data is true: failing. Provide .vital files in %s or "
                      "network access to %s, or set require_data: false.", msg, p.local_dir, p.api_url)
            raise StageError(f"ingest_vitaldb: {msg}", code=2)
        log.warning("%s. Writing an empty dataset; the pipeline continues with synthetic data only. "
                    "Put .vital files in %s or give access to %s to ingest real cases.", msg, p.local_dir, p.api_url)
    write_dataset(ds, paths.out, configs)
    write_json(manifest, paths.metrics)
    log.info(
        "%d cases (%s), %.1f hours, %d rows, %d failed, %d values cleaned; wrote %s and %s",
        len(ds.patients), ", ".join(f"{k}: {v}" for k, v in manifest["cases_by_source"].items()),
        manifest["hours"], len(ds.vitals), len(result.failures), clean.total(), paths.out, paths.metrics,
    )
    return manifest
