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
from biostream.data.labels import find_runs, segment_starts
from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL
from biostream.features.table import Part
from biostream.models.bundle import ModelBundle
from biostream.models.conditions import series_conditions
from biostream.models.detectors.clinical import ClinicalThresholdDetector, clinical_params
from biostream.models.floor import FloorView, Outputs, floor_key, floor_view_of_rows
from biostream.models.metrics import evaluate_scores, second_labels
from biostream.models.objective import Objective
from biostream.reporting.plots import plot_shap_summary, plot_signal_contributions

MONITOR = "monitor"  # the reference row: the bedside monitor's rules without alarm delay
MAP_ALONE = "map_alone"  # the reference row of early warning: the current MAP alone
REFERENCES = (MONITOR, MAP_ALONE)  # rows of the evaluation that are no trained model
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
        """Per-second scores, alarms and their class (the episode's; `technical_second`: the second's own), and whether
        a bedside rule fired (an alarm at once): what the serving parity test compares the service with."""
        return pd.DataFrame({"patient_id": part.rows["patient_id"], "time_s": part.rows["time_s"],
                             "score": self.scores, "alarm": self.alarm.astype(np.int8),
                             "technical": self.alarms[TECHNICAL].astype(np.int8),
                             "technical_second": self.outputs.technical.astype(np.int8),
                             "rule_fired": (self.outputs.rules > 0).astype(np.int8)})


def score_part(bundle: ModelBundle, part: Part, objective: Objective,
               views: dict[str, FloorView] | None = None) -> Scored:
    """A bundle's outputs and metrics on a part; `views`: the part's floor views by `floor_key`, shared by the
    bundles scored on it (the floor reads the same seconds for every detector)."""
    view = None
    if views is not None:
        key = floor_key(bundle.combination, bundle.pipeline.signals)
        if key not in views:
            views[key] = floor_view_of_rows(bundle.combination, bundle.pipeline, part.rows, part.vitals)
        view = views[key]
    outputs = bundle.outputs_of_rows(part.rows, part.vitals, view)
    metrics, alarms = evaluate_scores(part.rows, part.events, outputs, bundle.threshold, bundle.policy, objective,
                                      part.rule_events)
    metrics["conditions"] = condition_metrics(bundle, part)
    return Scored(metrics, outputs, alarms)


def condition_metrics(bundle: ModelBundle, part: Part) -> dict[str, float]:
    """The technical conditions over a part's rows (`biostream.models.conditions`): episodes of each per
    patient-hour, and the fraction of seconds with no learned score (learning baseline)."""
    rows = part.rows
    signals = list(bundle.pipeline.signals)
    learning, silent = np.zeros(len(rows), dtype=bool), np.zeros(len(rows), dtype=bool)
    pid = rows["patient_id"].to_numpy()
    vitals = part.vitals
    for p in pd.unique(pid):
        mine = np.flatnonzero(pid == p)
        rec = vitals[vitals["patient_id"] == p]
        cond = series_conditions(rec[signals].to_numpy(np.float64), bundle.pipeline.readiness, bundle.no_signal_s,
                                 bundle.window_s)
        at = np.searchsorted(rec["time_s"].to_numpy(), rows["time_s"].to_numpy()[mine])
        learning[mine] = cond.learning[at]
        silent[mine] = cond.no_signal[at].any(axis=1)
    breaks = segment_starts(pid, rows["time_s"].to_numpy())
    hours = len(rows) / 3600.0

    def per_hour(flag: np.ndarray) -> float:
        return len(find_runs(flag, breaks).start) / hours if hours > 0 else float("nan")

    return {"learning_baseline_per_hour": per_hour(learning), "no_signal_per_hour": per_hour(silent),
            "learning_baseline_fraction": float(learning.mean()) if len(rows) else float("nan")}


def monitor_bundle(like: ModelBundle, configs: Configs) -> ModelBundle:
    """The bedside monitor without alarm delay, as a bundle: configs/alarms.yaml's rules on each second's value
    (every `min_duration_s` 1), with `like`'s input pipeline and alarm policy (a reference: nothing is trained)."""
    params = clinical_params(configs)
    params["rules"] = tuple({**r, "min_duration_s": 1} for r in params["rules"])
    detector = ClinicalThresholdDetector(**params).fit(np.full((1, len(configs.signals.keys), 1), np.nan))
    return ModelBundle(like.pipeline, detector, like.policy)


def map_alone_bundle(like: ModelBundle, configs: Configs) -> ModelBundle:
    """"Current MAP alone" (CLINICAL.md: the reference any early warning of hypotension must beat), as a bundle: the
    hypotension rule of configs/alarms.yaml on each second's MAP with no delay, so its score ranks seconds by the
    current MAP and it alarms where MAP is under the limit (`like`'s pipeline and policy; nothing is trained)."""
    params = clinical_params(configs)
    params["rules"] = tuple({**r, "min_duration_s": 1} for r in params["rules"] if r["kind"] == "hypotension")
    if not params["rules"]:
        raise KeyError("configs/alarms.yaml has no hypotension rule: 'current MAP alone' needs its limit")
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
    fig.suptitle("detectors on the synthetic test patients (own alarm episodes: on the real recordings)")
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


REAL_SOURCES = ("vitaldb", "recordings", "real")  # the datasets of real recordings


def real_summary(name: str, m: Mapping[str, Any]) -> str:
    """One detector's figures on real recordings, in a line (the evaluate stage's log)."""
    own = m.get("own_alarms", {})
    ew = m.get("early_warning_auroc")
    return (f"{name}: rule events {m['rule_events']['recall']:.2f} caught, "
            f"{m['rule_events']['alarms_per_hour']:.2f} alarms/h "
            f"(physiological {m['physiological']['alarms_per_hour']:.2f}), "
            f"own {own.get('alarms_per_hour', float('nan')):.2f}/h, early warning "
            f"{'n/a' if ew is None else f'{ew:.3f}'}")


def realism(results: Mapping[str, Mapping[str, Any]], synthetic: str,
            advisory: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The figures that keep the synthetic world honest: the bedside rules' alarm episodes per patient-hour (the
    `clinical` bundle's, and the monitor's without delay) on the synthetic patients scored and on each real source,
    with their ratio (aim: within 2x); and what comes before a hypotension on each (`advisory`: the advisory
    metrics' `precursors`: the MAP in the 10 min before an onset, the share of onsets without warning)."""
    out: dict[str, Any] = {}
    for name in ("clinical", MONITOR):
        per = results.get(name, {})
        if synthetic not in per:
            continue
        syn = per[synthetic]["rule_events"]["alarms_per_hour"]
        row = {synthetic: syn}
        for src in REAL_SOURCES:
            if src in per:
                real = per[src]["rule_events"]["alarms_per_hour"]
                row[src] = real
                row[f"{src}_over_{synthetic}"] = real / syn if syn > 0 else None
        out[name] = row
    found = {"rule_alarm_episodes_per_patient_hour": out}
    if advisory:
        found["precursors"] = {src: m["precursors"] for src, m in advisory.items()
                               if src == synthetic or src in REAL_SOURCES}
    return found
