"""The `evaluate` stage's work, as functions: a bundle scored on a dataset's rows with every metric, the figures
reviewers read (ROC and PR curves, score distributions, confusion matrix, a patient's timeline, what drives the
scores), the score time per window, and the comparison of the detectors."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from biostream.core.config import Configs
from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL
from biostream.features.table import Part
from biostream.models.bundle import ModelBundle
from biostream.models.detectors.clinical import ClinicalThresholdDetector, clinical_params
from biostream.models.evaluation import Objective, evaluate_scores, second_labels
from biostream.models.floor import Outputs
from biostream.reporting.plots import plot_shap_summary, plot_signal_contributions

MONITOR = "monitor"  # the reference row: the bedside monitor's rules without alarm delay
CURVE_POINTS = 200
EXPLAIN_ROWS = 60  # anomalous and as many normal test seconds explained for the importance plots
TIMELINE_SIGNALS = ("hr", "spo2", "map", "etco2")


@dataclass(frozen=True)
class Scored:
    """A bundle's per-second outputs and alarms of each class on a part's rows, and every metric of them."""

    metrics: dict[str, Any]
    outputs: Outputs
    alarms: dict[str, np.ndarray]

    @property
    def scores(self) -> np.ndarray:
        return self.outputs.score

    @property
    def alarm(self) -> np.ndarray:
        """Alarm of either class, per second."""
        return self.alarms[PHYSIOLOGICAL] | self.alarms[TECHNICAL]

    def frame(self, part: Part) -> pd.DataFrame:
        """Per-second scores, alarms and their class (what the serving parity test compares the service with)."""
        return pd.DataFrame({"patient_id": part.rows["patient_id"], "time_s": part.rows["time_s"],
                             "score": self.scores, "alarm": self.alarm.astype(np.int8),
                             "technical": self.alarms[TECHNICAL].astype(np.int8)})


def score_part(bundle: ModelBundle, part: Part, objective: Objective) -> Scored:
    outputs = bundle.outputs_of_rows(part.rows, part.vitals)
    metrics, alarms = evaluate_scores(part.rows, part.events, outputs, bundle.threshold, bundle.policy, objective,
                                      part.rule_events)
    return Scored(metrics, outputs, alarms)


def monitor_bundle(like: ModelBundle, configs: Configs) -> ModelBundle:
    """The bedside monitor without alarm delay, as a bundle: configs/alarms.yaml's rules on each second's value
    (every `min_duration_s` 1), with `like`'s input pipeline and alarm policy (a reference: nothing is trained)."""
    params = clinical_params(configs)
    params["rules"] = tuple({**r, "min_duration_s": 1} for r in params["rules"])
    detector = ClinicalThresholdDetector(**params).fit(np.full((1, len(configs.signals.keys), 1), np.nan))
    return ModelBundle(like.pipeline, detector, like.policy)


def per_window_ms(bundle: ModelBundle, window: np.ndarray, repeats: int = 100) -> float:
    """Median time to score one raw window (after a warm-up call)."""
    bundle.score(window)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bundle.score(window)
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))


def curves(labels: np.ndarray, scores: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and PR curves, thinned to about `CURVE_POINTS` points each (DVC plots)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    keep_roc = np.unique(np.linspace(0, len(fpr) - 1, CURVE_POINTS).astype(int))
    keep_pr = np.unique(np.linspace(0, len(recall) - 1, CURVE_POINTS).astype(int))
    return (pd.DataFrame({"fpr": fpr[keep_roc], "tpr": tpr[keep_roc]}),
            pd.DataFrame({"recall": recall[keep_pr], "precision": precision[keep_pr]}))


def timeline(part: Part, scores: np.ndarray, threshold: float, patient: str, name: str) -> Figure:
    """One patient's signals, score and threshold over time, with its events shaded."""
    rec = part.vitals[part.vitals["patient_id"] == patient]
    mine = (part.rows["patient_id"] == patient).to_numpy()
    minutes = rec["time_s"].to_numpy() / 60
    fig, axes = plt.subplots(len(TIMELINE_SIGNALS) + 1, 1, figsize=(12, 9), sharex=True)
    for ax, s in zip(axes, TIMELINE_SIGNALS, strict=False):
        ax.plot(minutes, rec[s].to_numpy(), lw=0.6, color="black")
        ax.set_ylabel(s)
    ax = axes[-1]
    ax.plot(part.rows.loc[mine, "time_s"].to_numpy() / 60, scores[mine], lw=0.6, color="tab:blue", label="score")
    ax.axhline(threshold, color="tab:red", lw=0.8, ls="--", label="threshold")
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=7)
    for ev in part.events[part.events["patient_id"] == patient].itertuples():
        colour = "tab:grey" if ev.event_class == TECHNICAL else "tab:red"
        for a in axes:
            a.axvspan(ev.start_s / 60, ev.end_s / 60, color=colour, alpha=0.2, lw=0)
        axes[0].annotate(ev.kind, (ev.start_s / 60, 1.02), xycoords=("data", "axes fraction"), fontsize=7)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"{name}: test patient {patient}")
    fig.tight_layout()
    return fig


def score_distributions(positive: np.ndarray, scores: np.ndarray, threshold: float, name: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    for lab, colour in ((False, "tab:blue"), (True, "tab:red")):
        sel = positive == lab
        ax.hist(np.clip(scores[sel], -10, 10), bins=80, alpha=0.5, density=True, color=colour,
                label="physiological event" if lab else "normal")
    ax.axvline(threshold, color="black", ls="--", lw=0.8, label="threshold")
    ax.set_title(f"{name}: score distributions (test)")
    ax.legend()
    return fig


def confusion(positive: np.ndarray, alarm: np.ndarray, name: str) -> Figure:
    cm = np.array([[((positive == a) & (alarm == b)).sum() for b in (0, 1)] for a in (0, 1)])
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:,}", ha="center", va="center")
    ax.set_xticks([0, 1], ["no alarm", "alarm"])
    ax.set_yticks([0, 1], ["normal", "physiological\nevent"])
    ax.set_title(f"{name}: seconds (test)")
    return fig


def importance_figures(part: Part, bundle: ModelBundle, name: str) -> dict[str, Figure]:
    """What drives the scores, on a seeded sample of anomalous and normal test seconds."""
    rows = part.rows
    label = rows["label"].to_numpy() == 1
    picks = [rows[mask].sample(min(EXPLAIN_ROWS, int(mask.sum())), random_state=0) for mask in (label, ~label)]
    sample = pd.concat(picks)
    view = bundle.pipeline.view_of_rows(bundle.detector.input_view, sample, part.vitals)
    expl = bundle.explain_view(view)
    anomalous = sample["label"].to_numpy() == 1
    figs = {"signals": plot_signal_contributions(expl.signals, anomalous, f"{name}: what drives the score (test)")}
    if expl.features is not None:
        figs["shap"] = plot_shap_summary(expl.features, view, f"{name}: SHAP values of {len(sample)} test seconds")
    return figs


def test_figures(part: Part, scored: Scored, bundle: ModelBundle, name: str) -> dict[str, Figure]:
    """Every figure of one detector on the test patients, by kind (`<detector>_<kind>.png`)."""
    positive, counted = second_labels(part.rows)  # physiological event seconds; technical ones left out
    first = sorted(part.rows["patient_id"].unique())[0]
    return {"timeline": timeline(part, scored.scores, bundle.threshold, first, name),
            "scores": score_distributions(positive[counted], scored.scores[counted], bundle.threshold, name),
            "confusion": confusion(positive[counted], scored.alarms[PHYSIOLOGICAL][counted], name),
            **importance_figures(part, bundle, name)}


def comparison(rows: list[dict[str, Any]]) -> tuple[pd.DataFrame, Figure]:
    """The detectors side by side (one bar chart per column)."""
    cmp = pd.DataFrame(rows).set_index("detector")
    fig, axes = plt.subplots(1, len(cmp.columns), figsize=(4 * len(cmp.columns), 3.5))
    for ax, col in zip(np.atleast_1d(axes), cmp.columns, strict=True):
        cmp[col].plot.bar(ax=ax, color="tab:blue")
        ax.set_title(col)
        ax.set_xlabel("")
    fig.suptitle("detectors on the synthetic test patients")
    fig.tight_layout()
    return cmp, fig


def flat(m: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested metrics as MLflow metric names (`events.event_f1`), numbers only."""
    out = {}
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat(v, f"{key}."))
        elif isinstance(v, int | float) and v == v and v is not None:
            out[key.replace("/", "_")] = float(v)
    return out
