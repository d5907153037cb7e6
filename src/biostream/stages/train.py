"""Stage `train`: every detector with its tuned params (the fitted model of the study's best trial, which the tune
stage keeps in `results/tune/<detector>.model`, else fitted here), its threshold calibrated on the validation
patients, saved as a self-contained bundle and logged to MLflow.

Each bundle (`models/<detector>/`) holds the input pipeline, the fitted detector with its threshold and the alarm
policy; MLflow gets a run `train-<detector>` with params, validation metrics and the bundle as a pyfunc model that
takes raw windows (signature and input example included). `models/index.json` lists the bundles with their
thresholds and the MLflow runs they were logged in (`register` logs a bundle again when its run is not in the store
it registers to: `models/` restored by DVC alone is enough).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from biostream.core.io import write_json
from biostream.core.params import Params
from biostream.features import windows_at
from biostream.features.table import Part
from biostream.models.detectors import NAMES, detector_class, load_detector
from biostream.models.objective import Objective
from biostream.models.reference import Reference
from biostream.models.training import real_check_of, train_detector
from biostream.stages import StageError, help_of
from biostream.stages.learning import LearningPaths, learning
from biostream.tracking.pyfunc import log_bundle

log = logging.getLogger("biostream")

SUMMARY = ("objective", "physiological.weighted_f1", "physiological.event_recall",
           "physiological.false_alarms_per_hour", "technical.event_f1", "point.auprc")
REAL = ("real_own_alarms_per_hour", "uncapped_threshold", "uncapped_objective", "uncapped_real_own_alarms_per_hour")


def tuned_params(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text())["params"] if path.is_file() else None


def tuned_model(folder: Path, name: str) -> tuple[Any, str | None]:
    """(the study's best trial's fitted detector, where from) when the tune stage kept it for the study and the
    parameters of `<name>.json`; else (None, why not): `train` fits them itself."""
    meta_path, tuned_path = folder / f"{name}.model" / "trial.json", folder / f"{name}.json"
    if not meta_path.is_file() or not tuned_path.is_file():
        return None, None
    meta, tuned = json.loads(meta_path.read_text()), json.loads(tuned_path.read_text())
    if not meta.get("model"):
        return None, meta.get("note")
    if meta.get("study") != tuned.get("study") or meta["params"] != tuned["params"]:
        return None, f"{meta_path} is another study's model than {tuned_path}'s"
    det = load_detector(folder / f"{name}.model" / "detector")
    det.train_scores_ = np.load(folder / f"{name}.model" / "train_scores.npy")  # what the floor's spread is made of
    return det, f"trial {meta['trial']} of study {meta['study']}"


@dataclass(frozen=True, kw_only=True)
class Paths(LearningPaths):
    tuned: Path = field(metadata=help_of("folder of the tune stages' <detector>.json"))
    out: Path = field(metadata=help_of("folder for one bundle per detector"))
    metrics: Path


def training_reference(train: Part, signals: Sequence[str], sources: Sequence[str]) -> Reference:
    """The reference a bundle keeps of its inputs (`biostream.monitoring`): the training patients' seconds, every
    one of them (anomalies too: live patients have them); the alarm rates are each detector's, on validation."""
    vitals = train.vitals[train.vitals["patient_id"].isin(train.rows["patient_id"].unique())]
    values = vitals[list(signals)].to_numpy(dtype=np.float64)
    return Reference.of(values, signals, {}, f"{vitals['patient_id'].nunique()} training patients of "
                                             f"{', '.join(sources)} ({len(values)} seconds)",
                        vitals["patient_id"].to_numpy())


def run(params: Params, paths: Paths) -> dict[str, Any]:
    """Train every detector; save its bundle, log it to MLflow; write and return the summary (models/index.json)."""
    start = learning(params, paths, "train")
    configs, floor, features, pipeline = start.configs, start.floor, start.features, start.pipeline
    train, val, validation = start.train, start.val, start.validation
    policy, tparams = params.alarms, params.threshold
    objective = Objective.of(params.objective, configs.rules)
    real = None
    if tparams.real_source is not None:
        if tparams.real_source not in features.sources or not features.has_rows(tparams.real_source):
            raise StageError(f"train: threshold.real_source '{tparams.real_source}' has no recordings (see "
                             f"metrics/{tparams.real_source}.json); add them or set threshold.real_source: null")
        real = real_check_of(features.part(tparams.real_source), floor, pipeline, tparams.max_own_alarms_per_hour)
    example_row = val.rows.iloc[[len(val.rows) // 2]]
    example = windows_at(val.vitals, pipeline.signals, pipeline.geometry.window_s,
                         example_row["patient_id"].to_numpy(), example_row["time_s"].to_numpy())

    reference = training_reference(train, pipeline.signals, params.sources.train)
    out, summary = paths.out, {}
    for name in NAMES:
        cls = detector_class(name)
        try:
            hp = cls.training_params(tuned_params(paths.tuned, name) if cls.tunable else None, configs)
        except FileNotFoundError as exc:
            raise StageError(str(exc)) from None
        fitted, origin = tuned_model(paths.tuned, name) if cls.tunable else (None, None)
        if origin:
            log.info("%s: %s", name, f"the fitted model of {origin}" if fitted is not None else f"fitting: {origin}")
        trained = train_detector(name, hp, pipeline, train, val, validation, floor, policy, tparams, objective,
                                 fitted, real)
        det, metrics = trained.bundle.detector, trained.validation
        bundle_dir = out / name
        rates = {c: metrics.get(f"{c}.alarms_per_hour", float("nan")) for c in ("physiological", "technical")}
        replace(trained.bundle, reference=replace(reference, alarms_per_hour=rates)).save(bundle_dir)
        with mlflow.start_run(run_name=f"train-{name}", tags={"stage": "train", "detector": name}) as run:
            mlflow.log_params({k: str(v) for k, v in hp.items() if k != "rules"})
            mlflow.log_params({"threshold_method": tparams.method if det.calibrated else "rules",
                               "fitted_in": origin if fitted is not None else "train",
                               "floor": trained.bundle.combination.rules is not None,
                               **{f"alarm_{k}": v for k, v in policy.to_dict().items()}})
            mlflow.log_metrics({"fit_s": trained.fit_s, **{f"val_{k}": float(v) for k, v in metrics.items()
                                                            if np.isfinite(v)}})
            model_uri = log_bundle(bundle_dir, name, example)
        summary[name] = {"threshold": det.threshold_, "fit_s": round(trained.fit_s, 2), "model_uri": model_uri,
                         "run_id": run.info.run_id, **{f"val_{k}": metrics[k] for k in SUMMARY},
                         **{k: metrics[k] for k in REAL if k in metrics}}
        log.info("%s: fit %.1f s, threshold %.4g, validation %s %.3f, %.2f physiological false alarms/h; %s", name,
                 trained.fit_s, det.threshold_, objective.metric, metrics["objective"],
                 metrics["physiological.false_alarms_per_hour"], model_uri)
    write_json({k: {m: v for m, v in s.items() if m not in ("model_uri", "run_id", "fit_s")}
                for k, s in summary.items()}, paths.metrics)
    write_json(summary, out / "index.json")
    return summary
