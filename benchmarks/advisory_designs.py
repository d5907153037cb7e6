"""Learned hypotension advisories beyond the pipeline's own candidates (issue #40, section 4): two further designs,
judged forward on the real recordings with the definitions of `configs/advisories.yaml` (docs/advisories.md).

    python -m benchmarks.advisory_designs        # after `dvc repro` (reads data/features, data/*, models/)

1. Level plus learned score: a logistic regression of "a hypotension onset within 10 min" on the MAP's margin to
   the rule's limit, MAP extrapolated 5 min ahead, and each learned detector's own score; fit on the synthetic
   validation patients (seconds inside an event left out), its advisory threshold calibrated there to the advisory
   budget (from the highest down while within it), then judged on every real recording.
2. A supervised forecaster of the MAP's trends: gradient boosting on the current MAP, its drop from the last 30 min's
   median, the last 5 min's minimum, the extrapolated change at 5 and 10 min, the 10-min spread and the seconds
   under 65 in the last 30 min; leave-one-patient-out over the real records with a pressure (each patient scored by
   a model that never saw it), judged at several thresholds (the best of them is an upper bound: it is chosen on
   the data it is judged on).
Beside them, the pipeline's reference baseline (MAP extrapolated) on the same seconds. Prints one line per design.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from biostream.core.config import Configs
from biostream.features.table import FeatureSet
from biostream.models.advisory import advisories, extrapolated, margin, rolling_stat, rolling_sum
from biostream.models.bundle import ModelBundle
from biostream.models.candidates import Advisories
from biostream.models.forward import event_clock, judge, onsets
from biostream.reporting.advisory import frame_of, learned_frame, threshold_within

SOURCES = {"synthetic": "data/synthetic", "vitaldb": "data/vitaldb", "recordings": "data/recordings",
           "real": "data/real"}
KIND = "hypotension"


def line(name: str, frame: pd.DataFrame, breaks: np.ndarray, score: np.ndarray, events: pd.DataFrame,
         config: Advisories, rules: tuple, auroc: float | None = None) -> str:
    advised = advisories({KIND: score}, frame, config.episodes.policy, breaks)
    j = judge(advised, frame, events, rules, config.evaluation)
    h, a = j.summary(KIND), j.summary()
    return (f"{name:46s} hypotension warned {h['warned']}/{h['events']}, new-onset {h['new_onset_warned']}/"
            f"{h['new_onset']}; false/h {a['false_per_hour']:.2f}; time under {a['time_under_advisory']:.1%}"
            + ("" if auroc is None else f"; AUROC 10 min {auroc:.3f}"))


def level_features(bundle: ModelBundle, part, rule) -> tuple:
    frame, breaks, learned = learned_frame(bundle, part)
    m = frame["map"].to_numpy(np.float64)
    ex = extrapolated(m, breaks, 600, 300, 0.5)
    low = np.nanmin(learned) if np.isfinite(learned).any() else 0.0
    X = np.column_stack([np.nan_to_num(margin(m, rule.threshold, rule), nan=-10.0),
                         np.nan_to_num(margin(ex, rule.threshold, rule), nan=-10.0), np.nan_to_num(learned, nan=low)])
    ons = onsets(part.rule_events[part.rule_events["kind"] == KIND], 1800)
    inside, soon = event_clock(frame["patient_id"].to_numpy(), frame["time_s"].to_numpy(), ons)
    return frame, breaks, X, (soon <= 600) & ~inside, ~inside & np.isfinite(m)


def trend_features(m: np.ndarray, breaks: np.ndarray) -> np.ndarray:
    low = np.where(np.isfinite(m), (m < 65).astype(np.float64), 0.0)
    return np.column_stack([
        m, rolling_stat(m, breaks, 1800, 300, "median") - m, rolling_stat(m, breaks, 300, 60, "min"),
        extrapolated(m, breaks, 600, 300, 0.5) - m, extrapolated(m, breaks, 600, 600, 0.5) - m,
        rolling_stat(m, breaks, 600, 120, "std"), rolling_sum(low, breaks, 1800)])


def main() -> None:
    warnings.filterwarnings("ignore")
    configs = Configs.load("configs/signals.yaml", "configs/alarms.yaml")
    rules = configs.rules
    rule = next(r for r in rules if r.kind == KIND)
    config = Advisories.load("configs/advisories.yaml", rules)
    features = FeatureSet.open("data/features", SOURCES)
    val, real = features.part("synthetic", "val"), features.part("real", None)

    print("1. level plus learned score (fit and calibrated on the synthetic validation patients, judged on real):")
    for det in ("iforest", "ocsvm", "lstm_ae"):
        bundle = ModelBundle.load(f"models/{det}")
        fv, bv, Xv, yv, okv = level_features(bundle, val, rule)
        fr, br, Xr, yr, okr = level_features(bundle, real, rule)
        for cols, name in (([0, 1], "MAP level + extrapolated"), ([0, 1, 2], f"MAP level + extrapolated + {det}")):
            if det != "iforest" and len(cols) == 2:
                continue  # the same model for every detector
            model = LogisticRegression(max_iter=1000).fit(Xv[okv][:, cols], yv[okv])
            sv, sr = model.decision_function(Xv[:, cols]), model.decision_function(Xr[:, cols])
            t, _ = threshold_within(config, rules, fv, bv, np.where(np.isfinite(fv["map"].to_numpy()), sv, np.nan),
                                    val.rule_events, KIND)
            print(line(f"   {name}", fr, br, np.where(np.isfinite(fr["map"].to_numpy()), sr - t, -1.0),
                       real.rule_events, config, rules, roc_auc_score(yr[okr], sr[okr])))

    print("2. trend forecaster, leave-one-patient-out on the real records with a pressure:")
    frame, breaks = frame_of(real.vitals)
    pid, t = frame["patient_id"].to_numpy(), frame["time_s"].to_numpy()
    m = frame["map"].to_numpy(np.float64)
    X = trend_features(m, breaks)
    inside, soon = event_clock(pid, t, onsets(real.rule_events[real.rule_events["kind"] == KIND], 1800))
    y, ok = (soon <= 600) & ~inside, ~inside & np.isfinite(m)
    patients = [p for p in pd.unique(pid) if np.isfinite(m[pid == p]).any()]
    score = np.full(len(frame), np.nan)
    for held in patients:
        train = ok & (pid != held) & np.isin(pid, patients) & (t % 30 == 0)
        model = HistGradientBoostingClassifier(max_depth=3, max_iter=150, learning_rate=0.05, random_state=0)
        model.fit(X[train], y[train])
        mine = (pid == held) & np.isfinite(m)
        score[mine] = model.predict_proba(X[mine])[:, 1]
    sel = ok & np.isin(pid, patients)
    auroc = roc_auc_score(y[sel], score[sel])
    print(f"   (AUROC 10 min: forecaster {auroc:.3f}, current MAP {roc_auc_score(y[sel], -m[sel]):.3f})")
    for th in (0.1, 0.2, 0.3, 0.5):
        print(line(f"   forecaster > {th}", frame, breaks, np.nan_to_num(score - th, nan=-1.0), real.rule_events,
                   config, rules))
    baseline = margin(extrapolated(m, breaks, 600, 300, 0.5), rule.threshold, rule)
    print(line("reference: MAP extrapolated 5 min ahead", frame, breaks, baseline, real.rule_events, config, rules))


if __name__ == "__main__":
    main()
