"""Stage `generate`: the synthetic cohort with labelled anomalies."""

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
from biostream.sources.synthetic import Physiology, generate_cohort
from biostream.stages import help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths:
    out: Path = field(metadata=help_of("output folder (vitals, events, alarm_events, patients)"))
    metrics: Path = field(metadata=help_of("manifest JSON, a DVC metrics file"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")
    physiology: Path = Path("configs/synthetic.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Generate, label and split the cohort; write it and its manifest (returned)."""
    cohort_params = params.generate
    configs = Configs.load(paths.signals, paths.alarms)
    phys = Physiology.from_yaml(paths.physiology)

    with timed(log, "generating the cohort") as gen_time:
        bar = tqdm(range(cohort_params.n_patients), desc="patients", disable=not progress_enabled())
        cohort = generate_cohort(cohort_params, phys, configs.signals, progress=bar)
        patients = cohort.patients.assign(source="synthetic")
        ds = build_dataset(
            cohort.vitals,
            patients,
            configs,
            params.labels,
            params.splits,
            events=cohort.events,
        )
    rows = len(ds.vitals)
    log.info(
        "%d patients, %.1f hours, %d rows, %d injected events, %d alarm events; %.0f samples/s (rows x signals)",
        len(ds.patients), ds.patients["hours"].sum(), rows, len(ds.events), len(ds.alarm_events),
        rows * len(configs.signals.keys) / gen_time["seconds"],
    )
    with timed(log, "writing outputs"):
        write_dataset(ds, paths.out, configs)
        manifest = {"dataset": "synthetic", "status": "ok", **summarize(ds, configs)}
        write_json(manifest, paths.metrics)
    log.info("wrote %s and %s", paths.out, paths.metrics)
    return manifest
