"""DVC stage `tune@<detector>`: an Optuna study of one detector on the validation patients.

    python -m pipelines.tune --detector iforest --features data/features --synthetic data/synthetic \\
        --search-space configs/search_spaces/iforest.yaml --out results/tune/iforest.json \\
        --model results/tune/iforest.model

The study (`biostream.tuning.study`) resumes when nothing it depends on changed, code included, and starts
afresh otherwise; MLflow gets a parent run per study with a child run per trial. With `tune.workers` > 1 (and a
database server as `tune.storage`) the stage starts that many processes in all; the same command with `--join`
adds a worker from another machine to the running study. `--model` keeps the best trial's fitted detector, which
`train` then uses instead of fitting the same parameters again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from biostream.core.config import Configs, require
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure
from biostream.core.tracking import TrackingParams, setup_tracking
from biostream.features.table import FeatureSet, SourceParams
from biostream.models.calibration import ThresholdParams
from biostream.models.detectors import NAMES, detector_class
from biostream.models.evaluation import AlarmPolicy, Objective
from biostream.models.floor import SafetyParams
from biostream.models.technical import TechnicalChecks
from biostream.models.training import floor_template, validation_of
from biostream.tuning.space import SearchSpace, TuneParams
from biostream.tuning.study import StudyInputs, join_study, run_study


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--technical", default="configs/technical.yaml")
    p.add_argument("--detector", required=True, choices=NAMES)
    p.add_argument("--features", required=True, help="the featurize stage's output folder")
    p.add_argument("--synthetic", required=True, help="the generate stage's output folder")
    p.add_argument("--vitaldb", required=True, help="the ingest_vitaldb stage's output folder")
    p.add_argument("--recordings", required=True, help="the ingest_recordings stage's output folder")
    p.add_argument("--real", required=True, help="the ingest_real stage's output folder")
    p.add_argument("--search-space", required=True)
    p.add_argument("--out", required=True, help="best params JSON")
    p.add_argument("--model", help="folder for the best trial's fitted detector (train reuses it instead of fitting "
                                   "again)")
    p.add_argument("--join", action="store_true",
                   help="join the study as one more worker (same arguments and params as the running stage, from this "
                        "or another machine with the same data and code): run trials, write nothing")
    return p.parse_args(argv)


def start_workers(argv: list[str], n: int) -> list[subprocess.Popen]:
    """`n` more processes of this stage, each joining the study (`--join`)."""
    return [subprocess.Popen([sys.executable, "-m", "pipelines.tune", *argv, "--join"]) for _ in range(n)]


def datasets(args: argparse.Namespace) -> dict[str, str]:
    return {"synthetic": args.synthetic, "vitaldb": args.vitaldb, "recordings": args.recordings,
            "real": args.real}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    tune = TuneParams.from_params(params)
    if args.detector not in tune.n_trials:
        raise SystemExit(f"params.yaml: tune.n_trials has no entry for '{args.detector}'")
    fixed = dict(require(require(params, "detectors", "params.yaml"), args.detector, "params.yaml: detectors") or {})
    configs = Configs.load(args.signals, args.alarms)
    floor = floor_template(configs, SafetyParams.from_params(params), TechnicalChecks.from_yaml(args.technical))
    setup_tracking(TrackingParams.from_params(params))

    sources = SourceParams.from_params(params).train
    features = FeatureSet.open(args.features, datasets(args))
    pipeline = features.pipeline
    train = features.parts(sources, "train", normal_only=True)
    val = features.parts(sources, "val")
    if not len(train.rows) or not len(val.rows):
        raise SystemExit(f"tune: the training sources ({', '.join(sources)}) have no training or no validation "
                         "patients; add recordings or change params.yaml: sources.train")
    view = detector_class(args.detector).input_view
    log.info("%s: %d training windows, %d validation seconds (%d events)", args.detector, len(train.rows),
             len(val.rows), len(val.events))
    inputs = StudyInputs(
        detector=args.detector, fixed=fixed, space=SearchSpace.from_yaml(args.search_space),
        X_train=pipeline.view_of_rows(view, train.rows, train.vitals),
        X_val=pipeline.view_of_rows(view, val.rows, val.vitals), val=validation_of(val, floor, pipeline),
        floor=floor, signals=tuple(pipeline.signals), policy=AlarmPolicy.from_params(params),
        threshold=ThresholdParams.from_params(params), objective=Objective.from_params(params, configs.rules),
        tune=tune, pipeline_json=json.dumps(pipeline.to_dict(), sort_keys=True),
    )
    if args.join:
        join_study(inputs)
        return
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = run_study(inputs, (lambda: start_workers(argv, tune.workers - 1)) if tune.workers > 1 else None,
                           Path(args.model) if args.model else None)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from None
    write_json(result, args.out)
    log.info("%s: best %s %.3f with %s; wrote %s", args.detector, result["objective"], result["value"],
             result["params"], args.out)


if __name__ == "__main__":
    main()
