"""An Optuna study of one detector on the validation patients, recorded in MLflow (the `tune` stage's work).

TPE with a seed; trials stored in an Optuna RDB (`tune.storage`), so a killed run resumes where it stopped and
several workers can share a study; the LSTM autoencoder is pruned per epoch on its validation loss;
`MaxTrialsCallback` ends a study at `n_trials` finished trials in total, however many runs or workers it took. MLflow
gets a parent run per study with a child run per trial. A study is named by everything its result depends on, the
code it runs included (`study_name`, `code_fingerprint`): an edit to a detector, a feature or a metric starts a new
study, one to a comment or a docstring resumes the finished one (docs/studies-and-registry.md).
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.closure import import_closure, module_file
from biostream.models.alarms import AlarmPolicy
from biostream.models.calibration import ThresholdParams, Validation, calibrate_on_validation, validation_metrics
from biostream.models.detectors import detector_class, make_detector, score_view, undefined_where_unread
from biostream.models.floor import Combination, spread_of
from biostream.models.objective import Objective
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


def code_fingerprint(modules: Iterable[str]) -> str:
    """A hash of what the code does, not how it is written down: the syntax trees (without comments, docstrings or
    formatting) of `modules` (their files as imported, else as found in the package)."""
    h = hashlib.sha256()
    for name in sorted(modules):
        path = getattr(sys.modules.get(name), "__file__", None) or module_file(name)
        if not path or not str(path).endswith(".py"):
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
    code: tuple[str, ...] = ("biostream.tuning.study",)  # the modules whose import closure runs the study

    def code_modules(self) -> frozenset[str]:
        """The `biostream` modules the study runs: the import closure of `code` and of the detector's own module
        (imported by name, so no closure reaches it): the same whichever process computes it. `params.yaml`'s
        schema (`biostream.core.params`, which every stage imports) is left out: the values it validates are in the
        study's set-up already, and a change to another section's type must not restart every study."""
        closure = import_closure([*self.code, detector_class(self.detector).__module__]).modules
        return closure - {"biostream.core.params"}

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
                "code": code_fingerprint(self.code_modules())}


class BestFitted:
    """The fitted detector of this process's best complete trial so far (ties keep the earlier one, as Optuna's
    `best_trial` does), so the `tune` stage can hand the study's best model to `train` instead of fitting it again."""

    def __init__(self) -> None:
        self.trial: int | None = None
        self.value = float("-inf")
        self.detector: Any = None

    def offer(self, trial: int, value: float, detector: Any) -> None:
        if value > self.value:
            self.trial, self.value, self.detector = trial, value, detector


def save_best_model(folder: Path, study_name: str, best_trial: int, params: Mapping[str, Any],
                    kept: BestFitted) -> bool:
    """Write the study's best trial's fitted detector to `folder` (with its normal training rows' scores, and
    `trial.json`: the study, the trial and its hyperparameters) when this process ran that trial; else only
    `trial.json` saying so (the best trial ran in another worker or an earlier run: `train` fits it again).
    Returns whether the model was written."""
    from biostream.core.io import write_json

    have = kept.trial == best_trial and kept.detector is not None
    if have:
        kept.detector.save(folder / "detector")
        np.save(folder / "train_scores.npy", kept.detector.train_scores_)  # the floor's spread is made of them
    else:
        folder.mkdir(parents=True, exist_ok=True)
    write_json({"study": study_name, "trial": best_trial, "params": dict(params), "model": have,
                "note": None if have else "the best trial ran in another worker or an earlier run of the study: "
                                          "`train` fits its parameters again"}, folder / "trial.json")
    return have


def open_storage(tune: TuneParams) -> Any:
    """The study's RDB storage, with a heartbeat per running trial: a trial whose worker died (SIGKILL, a lost
    machine) is failed once its heartbeat is `grace_s` old, and re-queued with the same parameters (up to
    `max_retry` times), so nothing is left RUNNING and no sampled point is lost."""
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    engine = {"connect_args": {"timeout": 60}} if tune.storage.startswith("sqlite") else {"pool_pre_ping": True}
    return RDBStorage(tune.storage, engine_kwargs=engine, heartbeat_interval=int(round(tune.heartbeat_s)) or 1,
                      grace_period=int(round(tune.grace_s)),
                      heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=tune.max_retry))


def _open_study(inputs: StudyInputs) -> tuple[Any, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    make_detector(inputs.detector, **inputs.fixed)  # a bad fixed hyperparameter fails here, before any trial
    storage = open_storage(inputs.tune)
    study = optuna.create_study(
        study_name=study_name(inputs.detector, inputs.setup()), storage=storage,
        direction="maximize", load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=inputs.tune.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    return study, storage


def _finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _settle(study: Any, storage: Any, tune: TuneParams, deadline: float) -> None:
    """Wait until no trial runs: a live worker's trial ends, a dead worker's trial goes stale and is failed (and
    re-queued) after `grace_s`.

    A worker killed between starting a trial and its first heartbeat leaves a RUNNING trial with no heartbeat,
    which Optuna never finds stale (it skips such trials): the study waited for it until `timeout_s`. Each running
    trial is given one heartbeat here when first seen: a live worker's own heartbeats overwrite it, a dead one's
    trial goes stale `grace_s` later."""
    from optuna.storages import fail_stale_trials
    from optuna.trial import TrialState

    adopted: set[int] = set()
    study_id = storage.get_study_id_from_name(study.study_name)
    while time.monotonic() < deadline:
        fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        for tr in running:
            if tr.number not in adopted:
                storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, tr.number))
                adopted.add(tr.number)
        log.info("study %s: waiting for %d running trial(s) (%s) to end or go stale", study.study_name,
                 len(running), ", ".join(str(tr.number) for tr in running))
        time.sleep(tune.heartbeat_s)


def _optimize(study: Any, inputs: StudyInputs, worker: str, deadline: float, kept: BestFitted | None = None) -> None:
    """Run trials of the study in this process until it has `n_trials` finished in total (all workers), or the
    deadline; `kept` gets each complete trial's fitted detector (and keeps the best)."""
    import mlflow
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    name = inputs.detector

    def objective(trial: optuna.Trial) -> float:
        hp = {**inputs.fixed, **inputs.space.suggest(trial)}
        trial.set_user_attr("worker", worker)
        with mlflow.start_run(run_name=f"{name}-trial-{trial.number:03d}", nested=True,
                              tags={"stage": "tune", "detector": name, "study": study.study_name,
                                    "trial": str(trial.number), "worker": worker}):
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
            scores = undefined_where_unread(det, inputs.val.rows, score_view(det, inputs.X_val))
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
            value = value if value == value else 0.0  # NaN (e.g. no event at all) counts as 0
            if kept is not None:
                kept.offer(trial.number, value, det)
            return value

    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    while _finished(study) < inputs.n_trials and time.monotonic() < deadline:
        study.optimize(objective, timeout=max(1.0, deadline - time.monotonic()), catch=(),
                       callbacks=[MaxTrialsCallback(inputs.n_trials, states=finished_states)])


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def join_study(inputs: StudyInputs) -> int:
    """Add this process as a worker to the study the `tune` stage runs (the same inputs give the same study):
    run its trials until it has `n_trials` finished in total. Returns the number of trials this worker finished;
    the stage's own process writes the result."""
    import mlflow

    study, _ = _open_study(inputs)
    worker = worker_name()
    before = {tr.number for tr in study.get_trials(deepcopy=False)}
    with mlflow.start_run(run_name=f"tune-{inputs.detector}-worker", tags={
            "stage": "tune", "detector": inputs.detector, "study": study.study_name, "worker": worker}):
        _optimize(study, inputs, worker, time.monotonic() + inputs.tune.timeout_s)
    mine = [tr for tr in study.get_trials(deepcopy=False)
            if tr.number not in before and tr.user_attrs.get("worker") == worker and tr.state.is_finished()]
    log.info("worker %s finished %d trial(s) of study %s (%d finished in all)", worker, len(mine),
             study.study_name, _finished(study))
    return len(mine)


def run_study(inputs: StudyInputs, start_workers: Callable[[], Sequence[subprocess.Popen]] | None = None,
              model_dir: Path | None = None) -> dict[str, Any]:
    """Run (or resume) the study to `n_trials` finished trials, log it to the active MLflow experiment, and return
    what the `tune` stage writes: the best hyperparameters (constructor values, tuples as lists), the objective's
    value and the best trial's validation metrics. `start_workers` starts the other worker processes
    (`tune.workers` - 1, each running `join_study`) once the study exists; they are waited for before the result
    is read. `model_dir` gets the best trial's fitted detector (`save_best_model`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna
    from optuna.trial import TrialState

    name, t = inputs.detector, inputs.tune
    study, storage = _open_study(inputs)
    n_trials = inputs.n_trials
    deadline = time.monotonic() + t.timeout_s

    with mlflow.start_run(run_name=f"tune-{name}", tags={"stage": "tune", "detector": name,
                                                         "study": study.study_name}):
        done = _finished(study)
        mlflow.log_params({"n_trials": n_trials, "objective": inputs.objective.metric, "storage": t.storage,
                           "resumed_trials": done, "workers": t.workers})
        log.info("study %s: %d trials finished, %d to go (timeout %.0f s, %d worker(s))", study.study_name, done,
                 max(0, n_trials - done), t.timeout_s, t.workers)
        workers = list(start_workers()) if start_workers is not None and done < n_trials else []
        kept = BestFitted()
        while True:
            _optimize(study, inputs, worker_name(), deadline, kept)
            for proc in workers:
                try:
                    code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                if code:
                    log.warning("study %s: worker process %d exited with %s; its trials are kept or re-queued",
                                study.study_name, proc.pid, code)
            workers = []
            _settle(study, storage, t, deadline)  # another machine's worker, or a dead one's trial
            if _finished(study) >= n_trials or time.monotonic() >= deadline:
                break  # else: a re-queued trial of a dead worker still counts towards n_trials
        finished = _finished(study)
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
                            **{f"best_val_{k}": v for k, v in best.user_attrs.items() if k in LOGGED_METRICS
                               and v == v},
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
    if model_dir is not None:
        saved = save_best_model(model_dir, study.study_name, best.number, best_params, kept)
        log.info("study %s: best trial %d %s", study.study_name, best.number,
                 f"ran here: its fitted detector is in {model_dir}" if saved else "ran elsewhere: train fits it again")
    return {"detector": name, "params": {k: list(v) if isinstance(v, tuple) else v for k, v in best_params.items()},
            "objective": inputs.objective.metric, "value": best.value,
            "metrics": {k: v for k, v in best.user_attrs.items() if k in LOGGED_METRICS},
            "trials": len(study.trials), "study": study.study_name}
