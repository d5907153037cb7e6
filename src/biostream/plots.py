"""Plots shared by notebooks and stages. Functions return matplotlib Figures; callers save or show them."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
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
