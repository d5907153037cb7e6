"""Plots shared by notebooks and stages. Functions return matplotlib Figures; callers save or show them."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CATEGORY_COLOURS = {
    "clinical": "tab:red",
    "statistical": "tab:purple",
    "artefact": "tab:grey",
    "clinical_alarm": "tab:orange",
}


def plot_patient(
    vitals: pd.DataFrame,
    events: pd.DataFrame,
    patient_id: str,
    signals: Sequence[str],
    units: dict[str, str] | None = None,
) -> Figure:
    """One patient's signals over time (minutes), with ground-truth events shaded by category."""
    rec = vitals[vitals["patient_id"] == patient_id]
    if rec.empty:
        raise KeyError(f"patient '{patient_id}' is not in the table")
    evs = events[events["patient_id"] == patient_id]
    minutes = rec["time_s"].to_numpy() / 60.0
    fig, axes = plt.subplots(len(signals), 1, figsize=(12, 1.6 * len(signals)), sharex=True)
    axes = list(axes) if len(signals) > 1 else [axes]
    for ax, s in zip(axes, signals, strict=True):
        ax.plot(minutes, rec[s].to_numpy(), lw=0.7, color="black")
        ax.set_ylabel(f"{s}\n({units[s]})" if units else s, fontsize=8)
        for ev in evs.itertuples():
            touches = s in ev.signals.split(",")
            ax.axvspan(
                ev.start_s / 60.0,
                ev.end_s / 60.0,
                color=CATEGORY_COLOURS.get(ev.category, "tab:blue"),
                alpha=0.35 if touches else 0.08,
                lw=0,
            )
    for ev in evs.itertuples():
        axes[0].annotate(ev.kind, (ev.start_s / 60.0, 1.02), xycoords=("data", "axes fraction"), fontsize=7,
                         rotation=30)
    axes[-1].set_xlabel("minutes since start of recording")
    fig.suptitle(f"patient {patient_id}", y=1.0)
    fig.tight_layout()
    return fig


def plot_signal_contributions(signals: pd.DataFrame, anomalous: np.ndarray, title: str) -> Figure:
    """Mean contribution per signal on anomalous and on normal seconds (an `Explanation.signals` frame)."""
    anomalous = np.asarray(anomalous, dtype=bool)
    table = pd.DataFrame({"anomaly seconds": signals[anomalous].mean(), "normal seconds": signals[~anomalous].mean()})
    fig, ax = plt.subplots(figsize=(7, 3.5))
    table.plot.bar(ax=ax, color=["tab:red", "tab:blue"], width=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("mean contribution to the score")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_shap_summary(contributions: pd.DataFrame, values: np.ndarray, title: str, max_display: int = 15) -> Figure:
    """SHAP beeswarm of the features a model reads (contributions: an `Explanation.features` frame; values:
    the scaled feature values of the same rows)."""
    import shap

    used = (contributions != 0).any(axis=0).to_numpy()
    fig = plt.figure()
    shap.summary_plot(contributions.to_numpy()[:, used], np.asarray(values)[:, used],
                      feature_names=list(contributions.columns[used]), max_display=max_display, show=False,
                      plot_size=(8, 0.35 * max_display + 1.5))
    fig = plt.gcf()
    fig.suptitle(title)
    return fig
