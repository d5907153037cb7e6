"""DVC stage `tune@<detector>`: an Optuna study of one detector on the validation patients.

    python -m pipelines.tune --detector iforest --features data/features --synthetic data/synthetic \\
        --search-space configs/search_spaces/iforest.yaml --out results/tune/iforest.json

TPE with a seed; trials stored in an Optuna RDB (`tune.storage`), so a killed run resumes where it
stopped and several workers can share a study; the LSTM autoencoder is pruned per epoch on its
validation loss. MLflow gets a parent run per study (best params and value, optimisation history and
parameter importances) with a child run per trial (params, metrics, duration, pruned or not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import optuna  # noqa: E402

from biostream.config import load_yaml, require  # noqa: E402
from biostream.detectors import make_detector  # noqa: E402
from biostream.detectors.base import REGISTRY, score_view  # noqa: E402
from biostream.detectors.thresholds import ThresholdParams  # noqa: E402
from biostream.evaluation import AlarmPolicy  # noqa: E402
from biostream.io import write_json  # noqa: E402
from biostream.runtime import configure  # noqa: E402
from biostream.tracking import TrackingParams, setup_tracking  # noqa: E402
from biostream.tuning import (  # noqa: E402
    SearchSpace,
    StudyData,
    TuneParams,
    calibrate_on_validation,
    decode,
    validation_metrics,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--detector", required=True, choices=sorted(REGISTRY))
    p.add_argument("--features", required=True, help="the featurize stage's output folder")
    p.add_argument("--synthetic", required=True, help="the generate stage's output folder")
    p.add_argument("--search-space", required=True)
    p.add_argument("--out", required=True, help="best params JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    params = load_yaml(args.params)
    tune = TuneParams.from_params(params)
    policy = AlarmPolicy.from_params(params)
    tparams = ThresholdParams.from_params(params)
    fixed = dict(require(require(params, "detectors", "params.yaml"), args.detector, "params.yaml: detectors") or {})
    space = SearchSpace.from_yaml(args.search_space)
    n_trials = tune.n_trials.get(args.detector)
    if n_trials is None:
        raise SystemExit(f"params.yaml: tune.n_trials has no entry for '{args.detector}'")
    setup_tracking(TrackingParams.from_params(params))

    data = StudyData.load(args.features, args.synthetic)
    pipeline, vitals, val, val_rows = data.pipeline, data.vitals, data.val, data.val.rows
    view = REGISTRY[args.detector].input_view
    X_train = pipeline.view_of_rows(view, data.train, vitals)
    X_val = pipeline.view_of_rows(view, val_rows, vitals)  # built once: every trial scores the same rows
    log.info("%s: %d training windows, %d validation seconds (%d events)", args.detector, len(X_train),
             len(val_rows), len(val.events))

    # one study per detector and set-up: the same inputs resume it, different ones start afresh
    setup = json.dumps({"space": space.specs, "fixed": fixed, "objective": tune.objective, "seed": tune.seed,
                        "include_artefacts": tune.include_artefacts, "policy": policy.to_dict(),
                        "threshold": tparams.__dict__, "features": json.dumps(pipeline.to_dict(), sort_keys=True),
                        "rows": [len(data.train), len(val_rows)]}, sort_keys=True, default=str)
    study_name = f"{args.detector}-{hashlib.sha1(setup.encode()).hexdigest()[:10]}"
    study = optuna.create_study(
        study_name=study_name, storage=tune.storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=tune.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2),
    )
    done = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]

    def objective(trial: optuna.Trial) -> float:
        hp = {**fixed, **space.suggest(trial)}
        with mlflow.start_run(run_name=f"{args.detector}-trial-{trial.number:03d}", nested=True,
                              tags={"stage": "tune", "detector": args.detector, "study": study_name,
                                    "trial": str(trial.number)}):
            mlflow.log_params({k: str(v) for k, v in hp.items()})
            start = time.perf_counter()
            det = make_detector(args.detector, **hp)

            def report(epoch: int, logs: dict | None = None) -> None:
                trial.report(-float((logs or {}).get("val_loss", float("nan"))), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            try:
                det.fit(X_train, epoch_callback=report)
            except optuna.TrialPruned:
                mlflow.set_tag("state", "pruned")
                mlflow.log_metric("duration_s", time.perf_counter() - start)
                raise
            scores = score_view(det, X_val)
            threshold = calibrate_on_validation(scores, val, policy, tparams, tune.include_artefacts)
            metrics = validation_metrics(scores, val, threshold, policy, tune.include_artefacts)
            metrics["duration_s"] = time.perf_counter() - start
            mlflow.log_metrics({f"val_{k}" if k != "duration_s" else k: float(v) for k, v in metrics.items()})
            mlflow.set_tag("state", "complete")
            for k in ("event_f1", "event_recall", "event_precision", "false_alarms_per_hour", "auprc"):
                trial.set_user_attr(k, float(metrics[k]))
            value = float(metrics[tune.objective])
            return value if value == value else 0.0  # NaN (e.g. no alarm at all) counts as 0

    with mlflow.start_run(run_name=f"tune-{args.detector}",
                          tags={"stage": "tune", "detector": args.detector, "study": study_name}):
        mlflow.log_params({"n_trials": n_trials, "objective": tune.objective, "storage": tune.storage,
                           "resumed_trials": len(done)})
        remaining = max(0, n_trials - len(done))
        log.info("study %s: %d trials done, running %d more (timeout %.0f s)", study_name, len(done), remaining,
                 tune.timeout_s)
        if remaining:
            study.optimize(objective, n_trials=remaining, timeout=tune.timeout_s, catch=())
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                             optuna.trial.TrialState.PRUNED)]
        if len(finished) < n_trials:
            log.warning("study %s stopped at tune.timeout_s (%.0f s) after %d of %d trials: its result now depends "
                        "on this machine's speed; rerun to resume it, or raise the timeout", study_name,
                        tune.timeout_s, len(finished), n_trials)
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            raise SystemExit(f"{args.detector}: no trial completed; raise tune.timeout_s or lower the search space")
        best = study.best_trial
        best_params = {**fixed, **decode(best.params)}
        mlflow.log_params({f"best_{k}": str(v) for k, v in best.params.items()})
        mlflow.log_metrics({f"best_val_{tune.objective}": best.value,
                            **{f"best_val_{k}": v for k, v in best.user_attrs.items()},
                            "trials_complete": len(complete),
                            "trials_pruned": len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,)))})
        for name, plot in (("optimization_history", optuna.visualization.matplotlib.plot_optimization_history),
                           ("param_importances", optuna.visualization.matplotlib.plot_param_importances)):
            if name == "param_importances" and (len(complete) < 2 or not best.params):
                continue
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances undefined when nothing varied
                log.warning("no %s plot: %s", name, exc)
                continue
            mlflow.log_figure(ax.figure, f"plots/{name}.png")
            plt.close(ax.figure)

    write_json({"detector": args.detector, "params": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in best_params.items()},
                "objective": tune.objective, "value": best.value, "metrics": best.user_attrs,
                "trials": len(study.trials), "study": study_name}, args.out)
    log.info("%s: best %s %.3f with %s; wrote %s", args.detector, tune.objective, best.value, best.params, args.out)


if __name__ == "__main__":
    main()
