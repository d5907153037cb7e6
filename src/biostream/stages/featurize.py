"""Stage `featurize`: windows -> features for every dataset, and the preprocessor fitted on the training patients
of the sources the models learn from (`params.yaml: sources.train`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from biostream.core.config import Configs
from biostream.core.io import write_json
from biostream.core.params import Params
from biostream.core.runtime import progress_enabled, timed
from biostream.data.dataset import read_dataset
from biostream.features import InputPipeline, feature_names, featurize
from biostream.features.preprocess import fit_on_training
from biostream.features.readiness import Readiness
from biostream.features.table import write_feature_set
from biostream.stages import Datasets, StageError, help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths(Datasets):
    out: Path = field(metadata=help_of("folder for one <dataset>.parquet each, input_pipeline.json"))
    metrics: Path
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Featurize every dataset, fit the scaler, write the feature set and its summary (returned)."""
    fp = params.featurize
    train_sources = params.sources.train
    configs = Configs.load(paths.signals, paths.alarms)
    signals = configs.signals.keys
    names = feature_names(signals)

    datasets = {name: read_dataset(folder) for name, folder in paths.datasets().items()}
    tables, summary = {}, {}
    for name, ds in datasets.items():
        with timed(log, f"featurizing {name}") as took:
            table = featurize(ds.vitals, signals, fp,
                              lambda it, name=name: tqdm(it, desc=f"{name} windows", disable=not progress_enabled()),
                              learned_from=name in train_sources)
        rate = len(table) / took["seconds"] if took["seconds"] > 0 else float("nan")
        log.info("%s: %d windows of %d s x %d signals -> %d features (%.0f windows/s)",
                 name, len(table), fp.geometry.window_s, len(signals), len(names), rate)
        tables[name] = table
        summary[name] = {
            "windows": int(len(table)),
            "windows_per_split": {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
            "feature_missing_fraction": round(float(table[names].isna().to_numpy().mean()), 4) if len(table) else None,
        }

    # the scaler is fitted on the training patients of the sources the models learn from (params.yaml: sources.train)
    table = pd.concat([tables[s] for s in train_sources], ignore_index=True)
    vitals = pd.concat([datasets[s].vitals for s in train_sources], ignore_index=True)
    try:
        pre = fit_on_training(table, vitals, signals, fp.geometry)
    except ValueError as exc:
        raise StageError(f"featurize: {exc} (sources.train: {', '.join(train_sources)})") from None
    write_feature_set(paths.out, tables, InputPipeline(tuple(signals), fp.geometry, pre, Readiness.of(fp)))
    out = {"features": len(names), "window_s": fp.geometry.window_s, **summary}
    write_json(out, paths.metrics)
    log.info("wrote %s and %s", paths.out, paths.metrics)
    return out
