"""PyOD's detectors with their default settings on our features and splits, scored like ours.

    pip install -e .[peers]        # PyOD and the CPU build of PyTorch (its AutoEncoder needs it)
    python -m benchmarks.bench_peers [--out results/peers.md]

Each PyOD detector is fitted on the same normal training windows (all 172 scaled features), its threshold
calibrated on the validation patients by the same method as ours (`params.yaml: threshold`), and
evaluated on the test patients with the same alarm post-processing and event metrics. Exact `OCSVM`
is quadratic in rows, so it is fitted on a seeded subsample (`--ocsvm-rows`). Our tuned detectors'
numbers are read from `metrics/evaluate.json` (run `dvc repro` first).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks._data import BenchData
from biostream.core.config import load_yaml
from biostream.core.runtime import configure
from biostream.features import feature_names
from biostream.models.calibration import ThresholdParams, Validation, calibrate_on_validation
from biostream.models.evaluation import (
    AlarmPolicy,
    alarm_episodes,
    apply_policy,
    event_metrics,
    second_metrics,
)
from biostream.tuning.space import TuneParams


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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--ocsvm-rows", type=int, default=10000)
    p.add_argument("--out", default="results/peers.md")
    args = p.parse_args(argv)
    configure("WARNING")
    params = load_yaml(args.params)
    policy, tparams = AlarmPolicy.from_params(params), ThresholdParams.from_params(params)
    include_artefacts = TuneParams.from_params(params).include_artefacts
    data = BenchData.load()
    t = data.table
    names = feature_names(data.pipeline.signals)
    train = t[(t["split"] == "train") & (t["label"] == 0) & (t["artefact"] == 0)]
    val_rows = t[t["split"] == "val"].reset_index(drop=True)
    test_rows = t[t["split"] == "test"].reset_index(drop=True)
    ev = data.dataset.events
    val = Validation(val_rows, ev[ev["patient_id"].isin(val_rows["patient_id"].unique())])
    test_events = ev[ev["patient_id"].isin(test_rows["patient_id"].unique())]
    X = {k: data.pipeline.features(rows[names].to_numpy()) for k, rows in
         (("train", train), ("val", val_rows), ("test", test_rows))}

    rows_out = []
    for name, det in peers(0).items():
        X_fit = X["train"]
        if name == "OCSVM" and len(X_fit) > args.ocsvm_rows:
            X_fit = X_fit[np.random.default_rng(0).choice(len(X_fit), args.ocsvm_rows, replace=False)]
        start = time.perf_counter()
        det.fit(X_fit)
        fit_s = time.perf_counter() - start
        s_val, s_test = det.decision_function(X["val"]), det.decision_function(X["test"])
        thr = calibrate_on_validation(s_val, val, policy, tparams, include_artefacts)
        pid, ts = test_rows["patient_id"].to_numpy(), test_rows["time_s"].to_numpy()
        alarm = apply_policy(pid, ts, s_test, thr, policy)
        m = event_metrics(alarm_episodes(pid, ts, alarm), test_events, len(test_rows) / 3600, policy.tolerance_s,
                          include_artefacts)
        pt = second_metrics(test_rows, s_test, alarm, include_artefacts)
        rows_out.append((f"PyOD {name} (defaults)", m, pt, fit_s))
        print(f"{name}: fit {fit_s:.1f} s, test event F1 {m['event_f1']:.3f}, AUPRC {pt['auprc']:.3f}", flush=True)

    ours = json.loads(Path("metrics/evaluate.json").read_text())
    for det, per in ours.items():
        s = per["synthetic"]
        rows_out.append((f"BioStream {det}", s["events"], s["point"], None))
    lines = ["| detector | event F1 | event recall | event precision | false alarms / h | AUROC | AUPRC | fit s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, m, pt, fit_s in sorted(rows_out, key=lambda r: -(r[1]["event_f1"] or 0)):
        lines.append(f"| {label} | {m['event_f1']:.3f} | {m['event_recall']:.3f} | "
                     f"{(m['event_precision'] or float('nan')):.3f} | {m['false_alarms_per_hour']:.2f} | "
                     f"{pt['auroc']:.3f} | {pt['auprc']:.3f} | {'' if fit_s is None else f'{fit_s:.1f}'} |")
    table = "\n".join(lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n", encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
