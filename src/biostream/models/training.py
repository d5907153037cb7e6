"""Fitting a detector for the `train` stage: fit on normal training rows, calibrate the threshold on the
validation patients, and wrap it with its input pipeline and alarm policy as a `ModelBundle`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from biostream.features.pipeline import InputPipeline
from biostream.features.table import Part
from biostream.models.bundle import ModelBundle
from biostream.models.calibration import ThresholdParams, Validation, calibrate_on_validation, validation_metrics
from biostream.models.detectors import make_detector, score_rows
from biostream.models.evaluation import AlarmPolicy

# the window view is large and the detectors reading it learn nothing from data: fit on a few rows
WINDOW_VIEW_FIT_ROWS = 256


@dataclass(frozen=True)
class Trained:
    bundle: ModelBundle
    fit_s: float
    validation: dict[str, float]  # `validation_metrics` at the calibrated threshold


def train_detector(name: str, hyperparams: Mapping[str, Any], pipeline: InputPipeline, train: Part, val: Part,
                   policy: AlarmPolicy, threshold: ThresholdParams, include_artefacts: bool) -> Trained:
    """Fit `name` with `hyperparams` on the normal training rows, calibrate its threshold (if it is calibrated)
    on the validation rows by `threshold.method`, and measure it there."""
    det = make_detector(name, **hyperparams)
    fit_rows = train.rows.head(WINDOW_VIEW_FIT_ROWS) if det.input_view == "window" else train.rows
    start = time.perf_counter()
    det.fit(pipeline.view_of_rows(det.input_view, fit_rows, train.vitals))
    fit_s = time.perf_counter() - start
    scores = score_rows(det, pipeline, val.rows, val.vitals)
    validation = Validation(val.rows, val.events)
    if det.calibrated:
        det.set_threshold(calibrate_on_validation(scores, validation, policy, threshold, include_artefacts))
    metrics = validation_metrics(scores, validation, det.threshold_, policy, include_artefacts)
    return Trained(ModelBundle(pipeline, det, policy), fit_s, metrics)
