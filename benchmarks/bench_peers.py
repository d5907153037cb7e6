"""PyOD's detectors with their default settings on our features and splits, scored like ours.

    pip install -e .[peers]        # PyOD and the CPU build of PyTorch (its AutoEncoder needs it)
    python -m benchmarks.bench_peers [--out results/peers.md]

Each PyOD detector is fitted on the same normal training windows (all scaled features) and then treated exactly
like one of ours: the bedside rules of configs/alarms.yaml as its floor and the technical checks classing its
alarms (`params.yaml: safety`), its threshold calibrated on the validation patients by the same method and
objective (`params.yaml: threshold`, `objective`), the test patients scored with the same alarm policy and
metrics. So a peer's row says what it adds to the bedside floor, as ours do. Exact `OCSVM` is quadratic in rows,
so it is fitted on a seeded subsample (`--ocsvm-rows`). Our detectors' numbers are read from
`metrics/evaluate.json` (run `dvc repro` first).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from biostream.core.config import Configs, load_yaml
from biostream.core.params import validate
from biostream.core.runtime import configure
from biostream.features import feature_names
from biostream.features.table import FeatureSet
from biostream.models.calibration import calibrate_on_validation
from biostream.models.floor import combine, floor_view_of_rows, spread_of
from biostream.models.metrics import evaluate_scores
from biostream.models.objective import Objective
from biostream.models.technical import TechnicalChecks
from biostream.models.training import floor_template, validation_of

COLUMNS = ("physiological.weighted_f1", "physiological.event_recall", "physiological.event_precision",
           "physiological.false_alarms_per_hour", "rule_events.recall", "technical.event_f1",
           "point.auprc")
HEADER = ("weighted F1", "recall", "precision", "false alarms / h", "rule events caught", "technical F1",
          "AUPRC (physiological)")


def peers(seed: int) -> dict:
    try:
        from pyod.models.auto_encoder import AutoEncoder
        from pyod.models.ecod import ECOD
        from pyod.models.hbos import HBOS
        from pyod.models.iforest import IForest
        from pyod.models.ocsvm import OCSVM
    except ImportError as exc:
        raise SystemExit(f"PyOD is not installed ({exc}); run `pip install -e .[peers]` first") from exc
    return {"IForest": IForest(random_state=seed), "OCSVM": OCSVM(), "ECOD": ECOD(), "HBOS": HBOS(),
            "AutoEncoder": AutoEncoder(random_state=seed, verbose=0)}


def pick(metrics: dict, key: str) -> float:
    out: object = metrics
    for k in key.split("."):
        out = out.get(k) if isinstance(out, dict) else None
    return float("nan") if out is None else float(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--ocsvm-rows", type=int, default=10000)
    p.add_argument("--out", default="results/peers.md")
    args = p.parse_args(argv)
    configure("WARNING")
    params = load_yaml(args.params)
    configs = Configs.load("configs/signals.yaml", "configs/alarms.yaml")
    p = validate(params)
    policy, tparams = p.alarms, p.threshold
    objective = Objective.of(p.objective, configs.rules)
    try:
        features = FeatureSet.open("data/features", {"synthetic": "data/synthetic"})
    except FileNotFoundError as exc:
        raise SystemExit(f"{exc}: run `dvc repro featurize` first") from None
    pipeline = features.pipeline
    template = floor_template(configs, p.safety, TechnicalChecks.from_yaml(
        "configs/technical.yaml"))
    train = features.part("synthetic", "train", normal_only=True)
    val_part, test = features.part("synthetic", "val"), features.part("synthetic", "test")
    val = validation_of(val_part, template, pipeline)
    test_view = floor_view_of_rows(template, pipeline, test.rows, test.vitals)
    names = feature_names(pipeline.signals)
    X = {k: pipeline.features(part.rows[names].to_numpy()) for k, part in
         (("train", train), ("val", val_part), ("test", test))}

    rows_out = []
    for name, det in peers(0).items():
        X_fit = X["train"]
        if name == "OCSVM" and len(X_fit) > args.ocsvm_rows:
            X_fit = X_fit[np.random.default_rng(0).choice(len(X_fit), args.ocsvm_rows, replace=False)]
        start = time.perf_counter()
        det.fit(X_fit)
        fit_s = time.perf_counter() - start
        comb = replace(template, spread=spread_of(det.decision_function(X_fit)))
        s_val, s_test = det.decision_function(X["val"]), det.decision_function(X["test"])
        thr = calibrate_on_validation(s_val, val, comb, pipeline.signals, policy, tparams, objective)
        outputs = combine(s_test, thr, comb, test_view, pipeline.signals)
        m, _ = evaluate_scores(test.rows, test.events, outputs, 0.0, policy, objective, test.rule_events)
        rows_out.append((f"PyOD {name} (defaults) + floor", m, fit_s))
        print(f"{name}: fit {fit_s:.1f} s, threshold {thr:.4g}, test weighted F1 "
              f"{pick(m, 'physiological.weighted_f1'):.3f}", flush=True)

    ours = json.loads(Path("metrics/evaluate.json").read_text())
    for det, per in ours.items():
        rows_out.append((f"BioStream {det}", per["synthetic"], None))
    lines = ["| detector | " + " | ".join(HEADER) + " | fit s |", "|---" * (len(HEADER) + 2) + "|"]
    for label, m, fit_s in sorted(rows_out, key=lambda r: -np.nan_to_num(pick(r[1], COLUMNS[0]), nan=-1)):
        cells = [f"{pick(m, c):.2f}" if "per_hour" in c else f"{pick(m, c):.3f}" for c in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'' if fit_s is None else f'{fit_s:.1f}'} |")
    table = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
