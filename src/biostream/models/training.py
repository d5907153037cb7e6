"""Fitting a detector for the `train` stage: fit on normal training rows, put it on the bundle's common scale with
the safety floor and technical checks, calibrate its threshold on the validation patients with that whole alarm
system in place, and wrap it as a `ModelBundle`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from biostream.core.config import Configs
from biostream.features.pipeline import InputPipeline
from biostream.features.table import Part
from biostream.models.alarms import AlarmPolicy
from biostream.models.bundle import ModelBundle
from biostream.models.calibration import (
    OwnAlarmCap,
    ThresholdParams,
    Validation,
    calibrate_on_validation,
    validation_metrics,
)
from biostream.models.detectors import make_detector, score_rows
from biostream.models.detectors.clinical import ClinicalThresholdDetector, clinical_params
from biostream.models.floor import Combination, FloorView, SafetyParams, floor_view_of_rows, spread_of
from biostream.models.objective import Objective
from biostream.models.technical import TechnicalChecks

# the window view is large and the detectors reading it learn nothing from data: fit on a few rows
WINDOW_VIEW_FIT_ROWS = 256


@dataclass(frozen=True)
class Trained:
    bundle: ModelBundle
    fit_s: float
    validation: dict[str, float]  # `validation_metrics` at the calibrated threshold


def floor_template(configs: Configs, safety: SafetyParams, technical: TechnicalChecks) -> Combination:
    """The floor every learned detector gets (its `spread` is set per detector): the rules of the configs, fitted
    (they learn nothing from data: one empty window), and the technical checks, as `safety` asks."""
    rules = None
    if safety.floor:
        rules = ClinicalThresholdDetector(**clinical_params(configs))
        longest = max(r.min_duration_s for r in configs.rules)
        rules.fit(np.full((1, len(configs.signals.keys), longest), np.nan))
    return Combination(1.0, safety.cap, rules, technical if safety.technical else None,
                       {s.key: float(s.valid[1]) for s in configs.signals.signals})


def validation_of(part: Part, template: Combination, pipeline: InputPipeline) -> Validation:
    """The validation patients with the floor's view of their seconds, built once for every detector and trial."""
    return Validation(part.rows, part.events, floor_view_of_rows(template, pipeline, part.rows, part.vitals))


@dataclass(frozen=True)
class RealCheck:
    """Real recordings that cap every learned detector's threshold (`threshold.real_source`): their rows, the
    floor's view of them (built once), and the cap in own alarm episodes per patient-hour."""

    part: Part
    floor: FloorView
    max_per_hour: float

    def cap(self, det: Any, pipeline: InputPipeline) -> OwnAlarmCap:
        return OwnAlarmCap(self.part.rows, score_rows(det, pipeline, self.part.rows, self.part.vitals), self.floor,
                           self.max_per_hour)


def real_check_of(part: Part, template: Combination, pipeline: InputPipeline, max_per_hour: float) -> RealCheck:
    return RealCheck(part, floor_view_of_rows(template, pipeline, part.rows, part.vitals), max_per_hour)


def combination_for(detector: Any, template: Combination) -> Combination:
    """A detector whose threshold is its definition (the rules themselves) keeps its own score; a learned one gets
    the template with its own spread."""
    if not detector.calibrated:
        return Combination.plain()
    return replace(template, spread=spread_of(detector.train_scores_))


def train_detector(name: str, hyperparams: Mapping[str, Any], pipeline: InputPipeline, train: Part, val_part: Part,
                   val: Validation, template: Combination, policy: AlarmPolicy, threshold: ThresholdParams,
                   objective: Objective, fitted: Any = None, real: RealCheck | None = None) -> Trained:
    """Fit `name` with `hyperparams` on the normal training rows (or take `fitted`: the same detector, fitted by the
    study's best trial on the same rows), calibrate its threshold (if it is calibrated)
    on the validation rows by `threshold.method` with its floor in place and, with `real`, its own alarms on those
    real recordings capped, and measure it there."""
    if fitted is not None:
        det, fit_s = fitted, 0.0
    else:
        det = make_detector(name, **hyperparams)
        fit_rows = train.rows.head(WINDOW_VIEW_FIT_ROWS) if det.input_view == "window" else train.rows
        start = time.perf_counter()
        det.fit(pipeline.view_of_rows(det.input_view, fit_rows, train.vitals))
        fit_s = time.perf_counter() - start
    learned = score_rows(det, pipeline, val_part.rows, val_part.vitals)
    comb = combination_for(det, template)
    signals = pipeline.signals
    cap = real.cap(det, pipeline) if real is not None and det.calibrated else None
    if det.calibrated:
        det.set_threshold(calibrate_on_validation(learned, val, comb, signals, policy, threshold, objective, cap))
    metrics = validation_metrics(learned, det.threshold_, val, comb, signals, policy, objective)
    if cap is not None:
        # what the cap costs and saves: the threshold the synthetic objective alone would choose, beside it
        uncapped = calibrate_on_validation(learned, val, comb, signals, policy, threshold, objective)
        at_uncapped = validation_metrics(learned, uncapped, val, comb, signals, policy, objective)
        metrics.update(
            real_own_alarms_per_hour=cap.own_per_hour(det.threshold_, comb, signals, policy),
            uncapped_threshold=uncapped, uncapped_objective=at_uncapped["objective"],
            uncapped_real_own_alarms_per_hour=cap.own_per_hour(uncapped, comb, signals, policy))
    return Trained(ModelBundle(pipeline, det, policy, comb), fit_s, metrics)
