"""Benchmark of the four detectors with their default hyperparameters on the default cohort.

    python -m benchmarks.bench_detectors [--detectors iforest ocsvm ...]

For each detector: fit time on the normal training windows, single-window score time from a raw window
(input view + decision_function, what serving pays), and AUROC / AUPRC on the test patients (artefact
seconds excluded), over all anomalies and over clinical episodes only. Tuning (issue #4) comes later;
these are untuned defaults.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks._data import CLINICAL, BenchData
from biostream.core.runtime import configure
from biostream.models.detectors import NAMES, detector_class, make_detector


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detectors", nargs="*", default=["clinical", "iforest", "ocsvm", "lstm_ae"])
    p.add_argument("--test-rows", type=int, default=40000, help="test seconds scored (a seeded sample)")
    args = p.parse_args(argv)
    configure("WARNING")
    data = BenchData.load()
    t = data.table
    train = t[(t["split"] == "train") & (t["label"] == 0) & (t["artefact"] == 0)]
    test = t[(t["split"] == "test") & (t["artefact"] == 0)]
    test = test.sample(min(args.test_rows, len(test)), random_state=0)
    y_all = test["label"].to_numpy()
    clinical = test["anomaly_kind"].isin(CLINICAL).to_numpy()
    normal_or_clinical = (y_all == 0) | clinical
    one = data.windows(test.head(1))

    print(f"train: {len(train):,} normal windows of {data.table['patient_id'][t['split'] == 'train'].nunique()} "
          f"patients; test: {len(test):,} seconds of {test['patient_id'].nunique()} patients")
    print(f"{'detector':10s} {'fit s':>7s} {'1-window ms (p50/p99)':>22s} {'AUROC':>7s} {'AUPRC':>7s} "
          f"{'clinical AUROC':>15s}")
    for name in args.detectors:
        if name not in NAMES:
            raise SystemExit(f"unknown detector {name}; registered: {', '.join(NAMES)}")
        cls = detector_class(name)  # untuned defaults, or what the configs define
        det = make_detector(name, **cls.training_params({} if cls.tunable else None, data.configs))
        X_train = data.view(det, train)
        start = time.perf_counter()
        det.fit(X_train)
        fit_s = time.perf_counter() - start
        scores = det.decision_function(data.view(det, test))

        def score_one(det=det):
            return det.decision_function(data.pipeline.view(det.input_view, one))

        score_one()
        times = []
        for _ in range(300):
            s = time.perf_counter()
            score_one()
            times.append((time.perf_counter() - s) * 1e3)
        print(f"{name:10s} {fit_s:7.1f} {statistics.median(times):10.2f} / {np.percentile(times, 99):6.2f}    "
              f"{roc_auc_score(y_all, scores):7.3f} {average_precision_score(y_all, scores):7.3f} "
              f"{roc_auc_score(clinical[normal_or_clinical], scores[normal_or_clinical]):15.3f}")


if __name__ == "__main__":
    main()
