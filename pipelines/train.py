"""DVC stage `train`: refit every detector with its tuned params, calibrate its threshold on the validation
patients, save it as a self-contained bundle and log it to MLflow.

    python -m pipelines.train --features data/features --synthetic data/synthetic --tuned results/tune \\
        --out models --metrics metrics/train.json

Each bundle (`models/<detector>/`) holds the input pipeline, the fitted detector with its threshold and the
alarm policy; MLflow gets a run `train-<detector>` with params, validation metrics and the bundle as a
pyfunc model that takes raw windows (signature and input example included).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlflow

from biostream.bundle import ModelBundle
from biostream.config import Configs, load_yaml
from biostream.detectors import REGISTRY, make_detector
from biostream.detectors.base import score_rows
from biostream.detectors.clinical import clinical_params
from biostream.detectors.thresholds import ThresholdParams
from biostream.evaluation import AlarmPolicy
from biostream.features import windows_at
from biostream.io import write_json
from biostream.pyfunc import log_bundle
from biostream.runtime import configure
from biostream.tracking import TrackingParams, setup_tracking
from biostream.tuning import StudyData, TuneParams, calibrate_on_validation, decode, validation_metrics

# the window view is large and the detectors reading it learn nothing from data: fit on a few rows
WINDOW_VIEW_FIT_ROWS = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--features", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--tuned", required=True, help="folder of the tune stages' <detector>.json")
    p.add_argument("--out", required=True, help="folder for one bundle per detector")
    p.add_argument("--metrics", required=True)
    return p.parse_args(argv)


def detector_params(name: str, tuned: Path, configs: Configs) -> dict:
    if name == "clinical":  # no hyperparameters to tune: the rules of configs/alarms.yaml
        return clinical_params(configs)
    path = tuned / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `dvc repro tune@{name}` first")
    stored = json.loads(path.read_text())["params"]
    return decode({k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_yaml(args.params)
    configs = Configs.load(args.signals, args.alarms)
    policy = AlarmPolicy.from_params(params)
    tparams = ThresholdParams.from_params(params)
    include_artefacts = TuneParams.from_params(params).include_artefacts
    setup_tracking(TrackingParams.from_params(params))

    data = StudyData.load(args.features, args.synthetic)
    pipeline, vitals, train, val, val_rows = data.pipeline, data.vitals, data.train, data.val, data.val.rows
    example_row = val_rows.iloc[[len(val_rows) // 2]]
    example = windows_at(vitals, pipeline.signals, pipeline.geometry.window_s,
                         example_row["patient_id"].to_numpy(), example_row["time_s"].to_numpy())

    out, summary = Path(args.out), {}
    for name in sorted(REGISTRY):
        hp = detector_params(name, Path(args.tuned), configs)
        det = make_detector(name, **hp)
        fit_rows = train.head(WINDOW_VIEW_FIT_ROWS) if det.input_view == "window" else train
        start = time.perf_counter()
        det.fit(pipeline.view_of_rows(det.input_view, fit_rows, vitals))
        fit_s = time.perf_counter() - start
        scores = score_rows(det, pipeline, val_rows, vitals)
        if det.calibrated:
            det.set_threshold(calibrate_on_validation(scores, val, policy, tparams, include_artefacts))
        metrics = validation_metrics(scores, val, det.threshold_, policy, include_artefacts)
        bundle_dir = out / name
        ModelBundle(pipeline, det, policy).save(bundle_dir)
        with mlflow.start_run(run_name=f"train-{name}", tags={"stage": "train", "detector": name}) as run:
            mlflow.log_params({k: str(v) for k, v in hp.items() if k != "rules"})
            mlflow.log_params({"threshold_method": tparams.method if det.calibrated else "rules",
                               **{f"alarm_{k}": v for k, v in policy.to_dict().items()}})
            mlflow.log_metrics({"fit_s": fit_s, **{f"val_{k}": float(v) for k, v in metrics.items()}})
            model_uri = log_bundle(bundle_dir, name, example)
        summary[name] = {"threshold": det.threshold_, "fit_s": round(fit_s, 2), "model_uri": model_uri,
                         "run_id": run.info.run_id,
                         **{f"val_{k}": v for k, v in metrics.items() if k in
                            ("event_f1", "event_recall", "event_precision", "false_alarms_per_hour", "auprc")}}
        log.info("%s: fit %.1f s, threshold %.4g, validation event F1 %.3f, %.2f false alarms/h; %s",
                 name, fit_s, det.threshold_, metrics["event_f1"], metrics["false_alarms_per_hour"], model_uri)
    write_json({k: {m: v for m, v in s.items() if m not in ("model_uri", "run_id", "fit_s")}
                for k, s in summary.items()}, args.metrics)
    write_json(summary, out / "index.json")


if __name__ == "__main__":
    main()
