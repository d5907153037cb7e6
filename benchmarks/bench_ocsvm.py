"""Scalable One-Class SVM (Nystroem + SGDOneClassSVM) against exact `sklearn.svm.OneClassSVM`.

    python -m benchmarks.bench_ocsvm [--subsample 20000]

Exact OCSVM is quadratic (or worse) in rows, so both are fitted on the same subsample of normal training
windows with the same nu and gamma; the scalable one is also fitted on all of them. Prints fit time and
AUROC / AUPRC on test seconds, and the rank correlation of the two models' scores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.svm import OneClassSVM

from benchmarks._data import BenchData
from biostream.core.runtime import configure
from biostream.features import group_columns
from biostream.models.detectors import make_detector


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subsample", type=int, default=20000)
    p.add_argument("--test-rows", type=int, default=20000)
    args = p.parse_args(argv)
    configure("WARNING")
    data = BenchData.load()
    t = data.table
    train = t[(t["split"] == "train") & (t["label"] == 0) & (t["artefact"] == 0)]
    test = t[(t["split"] == "test") & (t["artefact"] == 0)].sample(args.test_rows, random_state=0)
    det = make_detector("ocsvm")
    X_all = data.view(det, train)
    X_sub = X_all[np.random.default_rng(0).choice(len(X_all), min(args.subsample, len(X_all)), replace=False)]
    X_test, y = data.view(det, test), test["label"].to_numpy()

    rows = []
    for label, X in ((f"scalable, {len(X_sub):,} rows", X_sub), (f"scalable, {len(X_all):,} rows", X_all)):
        d = make_detector("ocsvm")
        s = time.perf_counter()
        d.fit(X)
        rows.append((label, time.perf_counter() - s, d.decision_function(X_test)))
    cols = group_columns(X_all.shape[1], det.feature_groups)
    exact = OneClassSVM(kernel="rbf", gamma=det.gamma, nu=det.nu)
    s = time.perf_counter()
    exact.fit(X_sub[:, cols])
    rows.append((f"exact OneClassSVM, {len(X_sub):,} rows", time.perf_counter() - s,
                 -exact.decision_function(X_test[:, cols])))

    print(f"nu={det.nu}, gamma={det.gamma}, Nystroem components={det.n_components}, "
          f"features={len(cols)}; test: {len(test):,} seconds")
    for label, fit_s, scores in rows:
        print(f"{label:34s} fit {fit_s:7.2f} s  AUROC {roc_auc_score(y, scores):.3f}  "
              f"AUPRC {average_precision_score(y, scores):.3f}")
    rho = spearmanr(rows[0][2], rows[2][2]).statistic
    print(f"rank correlation of scalable and exact scores on the same subsample: {rho:.4f}")


if __name__ == "__main__":
    main()
