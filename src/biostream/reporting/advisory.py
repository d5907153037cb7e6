"""The advisory table: every candidate of `configs/advisories.yaml` judged forward on one source's patients
(`biostream.models.forward`), the reference baseline chosen, each candidate's bootstrap difference to it, and the
table as text (what `dvc repro` prints and docs/results.md shows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import AlarmRule
from biostream.data.labels import segment_starts
from biostream.models.advisory import Advisories, advisories, candidate_scores
from biostream.models.forward import Judged, bootstrap, choose_reference, judge


def judge_candidates(config: Advisories, rules: tuple[AlarmRule, ...], vitals: pd.DataFrame,
                     rule_events: pd.DataFrame) -> dict[str, Judged]:
    """Every candidate on the seconds of `vitals` (a source's patients, every second of their recordings)."""
    frame = vitals.sort_values(["patient_id", "time_s"], kind="stable").reset_index(drop=True)
    breaks = segment_starts(frame["patient_id"].to_numpy(), frame["time_s"].to_numpy())
    out = {}
    for c in config.candidates:
        advised = advisories(candidate_scores(c, rules, frame, breaks), frame, config.episodes.policy, breaks)
        out[c.name] = judge(advised, frame, rule_events, rules, config.evaluation)
    return out


def advisory_metrics(config: Advisories, judged: dict[str, Judged]) -> dict[str, Any]:
    """The source's figures: per candidate over every kind and per kind, its AUROCs, and its bootstrap difference to
    the reference baseline (over every kind, and for the grey zone's kind)."""
    ev = config.evaluation
    summaries = {n: j.summary() for n, j in judged.items()}
    reference = choose_reference(summaries, ev.false_per_hour)
    focus = ev.grey_zone.kind
    vs_all = bootstrap(judged, reference, ev.bootstrap_resamples, ev.seed)
    vs_focus = bootstrap(judged, reference, ev.bootstrap_resamples, ev.seed, focus)
    any_j = next(iter(judged.values()))
    star = any_j.counts[any_j.counts["kind"] == "*"]
    out: dict[str, Any] = {"patients": int(len(star)), "hours": float(star["seconds"].sum() / 3600.0),
                           "reference": reference, "candidates": {}}
    for c in config.candidates:
        j = judged[c.name]
        seen = j.counts[(j.counts["kind"] != "*") & ((j.counts["events"] > 0) | (j.counts["episodes"] > 0))]
        out["candidates"][c.name] = {
            "type": c.type, "source": c.source, "all": summaries[c.name],
            "by_kind": {k: j.summary(k) for k in sorted(pd.unique(seen["kind"]))},
            "auroc": j.auroc,
            "vs_reference": vs_all.get(c.name), f"vs_reference_{focus}": vs_focus.get(c.name)}
    return out


def _n(v: float | None, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def table(source: str, metrics: dict[str, Any], focus: str, horizon_s: int) -> str:
    """The advisory table of one source, as text."""
    head = (f"advisories on {source} ({metrics['patients']} patients, {metrics['hours']:.1f} h); reference baseline: "
            f"{metrics['reference']}")
    cols = ("candidate", "warned", "new-onset", f"{focus}", f"{focus} new", "lead s", "episodes/h", "false/h",
            "PPV", "time on", f"AUROC {focus} {horizon_s // 60} min")
    lines = [head, " | ".join(cols)]
    for name, m in metrics["candidates"].items():
        a, k = m["all"], m["by_kind"].get(focus)
        lines.append(" | ".join((
            name, f"{a['warned']}/{a['events']}", f"{a['new_onset_warned']}/{a['new_onset']}",
            f"{k['warned']}/{k['events']}" if k else "-", f"{k['new_onset_warned']}/{k['new_onset']}" if k else "-",
            _n(a["median_lead_s"], ".0f"), _n(a["advisory_episodes_per_hour"], ".2f"),
            _n(a["false_per_hour"], ".2f"), _n(a["ppv"], ".2f"), _n(a["time_under_advisory"], ".1%"),
            _n(m["auroc"].get(f"{focus}@{horizon_s}s"), ".3f"))))
    return "\n".join(lines)
