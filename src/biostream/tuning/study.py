"""An Optuna study of one detector on the validation patients, recorded in MLflow (the `tune` stage's work).

TPE with a seed; trials stored in an Optuna RDB (`tune.storage`), so a killed run resumes where it stopped and
several workers can share a study; the LSTM autoencoder is pruned per epoch on its validation loss. MLflow gets
a parent run per study (best params and value, optimisation history and parameter importances) with a child
run per trial (params, metrics, duration, pruned or not).

A study is identified by everything its result depends on (`study_name`): the search space, the fixed
hyperparameters, the objective, seed, alarm policy and threshold method, the input pipeline, the rows, and the
code it scores with (`code_fingerprint`: the syntax trees of the `biostream` modules the process imported, so
an edit to a detector, a feature or a metric starts a new study, while an edit to a comment or a docstring, or
a rerun with nothing changed, resumes the finished one). `MaxTrialsCallback` ends it at `n_trials` finished
trials in total, however many runs or workers it took.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from biostream.models.calibration import ThresholdParams, Validation, calibrate_on_validation, validation_metrics
from biostream.models.detectors import make_detector, score_view
from biostream.models.evaluation import AlarmPolicy, Objective
from biostream.models.floor import Combination, spread_of
from biostream.tuning.space import SearchSpace, TuneParams, decode

log = logging.getLogger("biostream.tuning")
LOGGED_METRICS = ("objective", "physiological.weighted_f1", "physiological.event_recall",
                  "physiological.false_alarms_per_hour", "technical.event_f1", "point.auprc")


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_fingerprint(modules: Iterable[str] | None = None) -> str:
    """A hash of what the code does, not how it is written down: the syntax trees (without comments, docstrings or
    formatting) of `modules`, by default every `biostream` module this process has imported."""
    names = sorted(modules if modules is not None else
                   (m for m in sys.modules if m == "biostream" or m.startswith("biostream.")))
    h = hashlib.sha256()
    for name in names:
        path = getattr(sys.modules.get(name), "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        tree = _without_docstrings(ast.parse(Path(path).read_text(encoding="utf-8")))
        h.update(name.encode())
        h.update(ast.dump(tree, annotate_fields=False).encode())
    return h.hexdigest()[:16]


def study_name(detector: str, setup: Mapping[str, Any]) -> str:
    """`<detector>-<hash of the set-up>`: the same set-up resumes the study, any difference starts a new one."""
    text = json.dumps(setup, sort_keys=True, default=str)
    return f"{detector}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


@dataclass
class StudyInputs:
    """What a study of one detector reads: training inputs (the detector's view of normal training rows), the
    validation view (built once: every trial scores the same rows), the validation patients with the floor's view
    of them, and the floor every trial is calibrated and measured with (`floor`, its spread set per trial)."""

    detector: str
    fixed: Mapping[str, Any]
    space: SearchSpace
    X_train: np.ndarray
    X_val: np.ndarray
    val: Validation
    floor: Combination
    signals: tuple[str, ...]
    policy: AlarmPolicy
    threshold: ThresholdParams
    objective: Objective
    tune: TuneParams
    pipeline_json: str  # the input pipeline the views were built with

    @property
    def n_trials(self) -> int:
        if self.detector not in self.tune.n_trials:
            raise KeyError(f"params.yaml: tune.n_trials has no entry for '{self.detector}'")
        return self.tune.n_trials[self.detector]

    def setup(self) -> dict[str, Any]:
        """Everything the study's result depends on (`study_name`); the code last, once it is all imported."""
        return {"space": self.space.specs, "fixed": dict(self.fixed), "objective": self.objective.__dict__,
                "seed": self.tune.seed, "policy": self.policy.to_dict(), "threshold": self.threshold.__dict__,
                "floor": self.floor.to_dict() | {"rules": self.floor.rules is not None and self.floor.rules.rules},
                "features": self.pipeline_json, "rows": [len(self.X_train), len(self.val.rows)],
                "code": code_fingerprint()}


def run_study(inputs: StudyInputs) -> dict[str, Any]:
    """Run (or resume) the study to `n_trials` finished trials, log it to the active MLflow experiment, and return
    what the `tune` stage writes: the best hyperparameters (constructor values, tuples as lists), the objective's
    value and the best trial's validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    name, t = inputs.detector, inputs.tune
    make_detector(name, **inputs.fixed)  # its module imported: part of the code fingerprint
    study = optuna.create_study(
        study_name=study_name(name, inputs.setup()), storage=t.storage, direction="maximize",
        load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=t.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    n_trials = inputs.n_trials

    def objective(trial: optuna.Trial) -> float:
        hp = {**inputs.fixed, **inputs.space.suggest(trial)}
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number:03d}", nested=True,
                              tags={"stage": "tune", "detector": name, "study": study.study_name,
                                    "trial": str(trial.number)}):
            mlflow.log_params({k: str(v) for k, v in hp.items()})
            start = time.perf_counter()
            det = make_detector(name, **hp)

            def report(epoch: int, logs: dict | None = None) -> None:
                trial.report(-float((logs or {}).get("val_loss", float("nan"))), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            try:
                det.fit(inputs.X_train, epoch_callback=report)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                mlflow.log_metric("duration_s", time.perf_counter() - start)
                raise
            scores = score_view(det, inputs.X_val)
            comb = replace(inputs.floor, spread=spread_of(det.train_scores_))
            args = (inputs.val, comb, inputs.signals, inputs.policy)
            threshold = calibrate_on_validation(scores, *args, inputs.threshold, inputs.objective)
            metrics = validation_metrics(scores, threshold, *args, inputs.objective)
            metrics["duration_s"] = time.perf_counter() - start
            mlflow.log_metrics({f"val_{k}" if k != "duration_s" else k: float(v) for k, v in metrics.items()
                                if np.isfinite(v)})
            mlflow.set_tag("state", "complete")
            for k in LOGGED_METRICS:
                trial.set_user_attr(k, float(metrics.get(k, float("nan"))))
            value = float(metrics["objective"])
            return value if value == value else 0.0  # NaN (e.g. no event at all) counts as 0

    with mlflow.start_run(run_name=f"tune-{name}", tags={"stage": "tune", "detector": name,
                                                         "study": study.study_name}):
        done = len(study.get_trials(deepcopy=False, states=finished_states))
        mlflow.log_params({"n_trials": n_trials, "objective": inputs.objective.metric, "storage": t.storage,
                           "resumed_trials": done})
        log.info("study %s: %d trials finished, %d to go (timeout %.0f s)", study.study_name, done,
                 max(0, n_trials - done), t.timeout_s)
        if done < n_trials:
            study.optimize(objective, timeout=t.timeout_s, catch=(),
                           callbacks=[MaxTrialsCallback(n_trials, states=finished_states)])
        finished = len(study.get_trials(deepcopy=False, states=finished_states))
        if finished < n_trials:
            log.warning("study %s stopped at tune.timeout_s (%.0f s) after %d of %d trials: its result now depends "
                        "on this machine's speed; rerun to resume it, or raise the timeout", study.study_name,
                        t.timeout_s, finished, n_trials)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise RuntimeError(f"{name}: no trial completed; raise tune.timeout_s or narrow the search space")
        best = study.best_trial
        mlflow.log_params({f"best_{k}": str(v) for k, v in best.params.items()})
        mlflow.log_metrics({"best_val_objective": best.value,
                            **{f"best_val_{k}": v for k, v in best.user_attrs.items() if v == v},
                            "trials_complete": len(complete),
                            "trials_pruned": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))})
        for plot_name, plot in (("optimization_history", optuna.visualization.matplotlib.plot_optimization_history),
                                ("param_importances", optuna.visualization.matplotlib.plot_param_importances)):
            if plot_name == "param_importances" and (len(complete) < 2 or not best.params):
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances undefined when nothing varied
                log.warning("no %s plot: %s", plot_name, exc)
                continue
            mlflow.log_figure(ax.figure, f"plots/{plot_name}.png")
            plt.close(ax.figure)

    best_params = {**inputs.fixed, **decode(best.params)}
    return {"detector": name, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in best_params.items()},
            "objective": inputs.objective.metric, "value": best.value, "metrics": best.user_attrs,
            "trials": len(study.trials), "study": study.study_name}
