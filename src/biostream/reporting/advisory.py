"""The advisory table: every candidate of `configs/advisories.yaml` judged forward on one source's patients
(`biostream.models.forward`), the reference baseline chosen, each candidate's bootstrap difference to it, and the
table as text (what `dvc repro` prints and docs/results.md shows)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import AlarmRule
from biostream.data.labels import segment_starts
from biostream.features.table import Part
from biostream.models.advisory import advisories, candidate_scores
from biostream.models.bundle import ModelBundle
from biostream.models.candidates import ANY, Advisories
from biostream.models.detectors import score_rows
from biostream.models.forward import Judged, bootstrap, choose_reference, figure, judge, precursors

log = logging.getLogger("biostream")

CALIBRATION_QUANTILES = 1.0 - np.geomspace(0.5, 1e-4, 64)  # the thresholds tried on validation: denser at the top


def frame_of(vitals: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Seconds sorted by patient and time, and where a stretch starts."""
    frame = vitals.sort_values(["patient_id", "time_s"], kind="stable").reset_index(drop=True)
    return frame, segment_starts(frame["patient_id"].to_numpy(), frame["time_s"].to_numpy())


def judge_candidates(config: Advisories, rules: tuple[AlarmRule, ...], vitals: pd.DataFrame,
                     rule_events: pd.DataFrame) -> dict[str, Judged]:
    """Every candidate of the config on the seconds of `vitals` (a source's patients, every second)."""
    frame, breaks = frame_of(vitals)
    out = {}
    for c in config.candidates:
        advised = advisories(candidate_scores(c, rules, frame, breaks), frame, config.episodes.policy, breaks)
        out[c.name] = judge(advised, frame, rule_events, rules, config.evaluation)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Learned candidates: a detector's own score, above a threshold calibrated to the advisory budget
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Learned:
    """A learned detector's score as an advisory of any kind: on above `threshold`, the lowest of
    `CALIBRATION_QUANTILES` of its validation scores from which on every higher one is within the advisory budget
    (false advisory episodes per hour and time under advisory) on the validation patients (+inf when none is)."""

    name: str
    threshold: float
    validation: dict[str, Any]

    @property
    def source(self) -> str:
        v = self.validation
        return (f"the {self.name} detector's score > {self.threshold:.4g}, calibrated on {v['patients']} validation "
                f"patients to <= {v['budget']['false_per_hour']} false advisory episodes/h and "
                f"{v['budget']['time_under_advisory']:.0%} of the time (there: {v['false_per_hour']}/h, "
                f"{v['time_under_advisory']})")


def learned_frame(bundle: ModelBundle, part: Part) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """A part's seconds (sorted, stretches) and the detector's own score of each (NaN where it reads nothing)."""
    frame, breaks = frame_of(part.vitals[part.vitals["patient_id"].isin(part.rows["patient_id"].unique())])
    learned = score_rows(bundle.detector, bundle.pipeline, part.rows, part.vitals)
    keyed = pd.Series(np.where(np.isfinite(learned), learned, np.nan),
                      index=pd.MultiIndex.from_frame(part.rows[["patient_id", "time_s"]]))
    at = pd.MultiIndex.from_frame(frame[["patient_id", "time_s"]])
    return frame, breaks, keyed.reindex(at).to_numpy(np.float64)


def judge_learned(config: Advisories, rules: tuple[AlarmRule, ...], frame: pd.DataFrame, breaks: np.ndarray,
                  scores: np.ndarray, threshold: float, rule_events: pd.DataFrame, kind: str = ANY) -> Judged:
    advised = advisories({kind: scores - threshold}, frame, config.episodes.policy, breaks)
    return judge(advised, frame, rule_events, rules, config.evaluation)


def threshold_within(config: Advisories, rules: tuple[AlarmRule, ...], frame: pd.DataFrame, breaks: np.ndarray,
                     scores: np.ndarray, rule_events: pd.DataFrame, kind: str = ANY) -> tuple[float, dict | None]:
    """The lowest of `CALIBRATION_QUANTILES` of the scores from which on every higher one keeps the advisory (of
    `kind`) within the budget on these seconds, and its figures (+inf and None when none does)."""
    finite = scores[np.isfinite(scores)]
    threshold, found = float("inf"), None
    if not len(finite):
        return threshold, found
    for t in np.unique(np.quantile(finite, CALIBRATION_QUANTILES))[::-1]:  # from the highest down, while within
        s = judge_learned(config, rules, frame, breaks, scores, t, rule_events, kind).summary()
        if not config.evaluation.within(s):
            break
        threshold, found = float(t), s
    return threshold, found


def calibrate(name: str, config: Advisories, rules: tuple[AlarmRule, ...], bundle: ModelBundle,
              validation: Part) -> Learned:
    """The advisory threshold of a learned detector on the training source's validation patients."""
    frame, breaks, scores = learned_frame(bundle, validation)
    threshold, found = threshold_within(config, rules, frame, breaks, scores, validation.rule_events)
    info: dict[str, Any] = {"patients": int(frame["patient_id"].nunique()), "budget": config.evaluation.budget,
                            "false_per_hour": None, "time_under_advisory": None}
    if found is not None:
        info.update(false_per_hour=round(found["false_per_hour"] or 0.0, 4),
                    time_under_advisory=round(found["time_under_advisory"] or 0.0, 4))
    return Learned(name, threshold, info)


def advisory_metrics(config: Advisories, judged: dict[str, Judged],
                     learned: dict[str, Learned] | None = None) -> dict[str, Any]:
    """The source's figures: per candidate (the config's baselines, then `learned`, whose judged entries are in
    `judged` too) over every kind and per kind, its AUROCs, and its bootstrap difference to the reference baseline
    (over every kind, and for the grey zone's kind)."""
    ev = config.evaluation
    learned = learned or {}
    summaries = {n: j.summary() for n, j in judged.items()}
    reference = choose_reference({c.name: summaries[c.name] for c in config.candidates}, ev)
    focus = ev.grey_zone.kind
    vs_all = bootstrap(judged, reference, ev.bootstrap_resamples, ev.seed)
    vs_focus = bootstrap(judged, reference, ev.bootstrap_resamples, ev.seed, focus)
    any_j = next(iter(judged.values()))
    star = any_j.counts[any_j.counts["kind"] == "*"]
    out: dict[str, Any] = {"patients": int(len(star)), "hours": float(star["seconds"].sum() / 3600.0),
                           "reference": reference, "budget": ev.budget, "candidates": {}}
    described = [(c.name, c.type, c.source, None) for c in config.candidates]
    described += [(n, "learned", cand.source, cand.threshold) for n, cand in learned.items()]
    for name, kind, source, threshold in described:
        j = judged[name]
        seen = j.counts[(j.counts["kind"] != "*") & ((j.counts["events"] > 0) | (j.counts["episodes"] > 0))]
        out["candidates"][name] = {
            "type": kind, "source": source, "all": summaries[name],
            "by_kind": {k: j.summary(k) for k in sorted(pd.unique(seen["kind"]))},
            "auroc": j.auroc,
            "vs_reference": vs_all.get(name), f"vs_reference_{focus}": vs_focus.get(name)}
        if threshold is not None:
            out["candidates"][name]["threshold"] = threshold if np.isfinite(threshold) else None
    return out


def source_precursors(config: Advisories, rules: tuple[AlarmRule, ...], part: Part) -> dict[str, Any]:
    """`precursors` of the grey zone's rule kind on a part's patients."""
    rule = next(r for r in rules if r.kind == config.evaluation.grey_zone.kind)
    frame, _ = frame_of(part.vitals[part.vitals["patient_id"].isin(part.rows["patient_id"].unique())])
    return precursors(frame, part.rule_events, rule, config.evaluation)


def evaluate_advisories(config: Advisories, rules: tuple[AlarmRule, ...], parts: Mapping[str, Part],
                        learned: Mapping[str, ModelBundle], validation: Part | None) -> tuple[dict[str, Any], str]:
    """Every candidate on every source: the config's baselines, and each learned detector's score with its threshold
    calibrated on `validation` (the training source's validation patients). The metrics per source, and the tables."""
    cands = ({name: calibrate(name, config, rules, b, validation) for name, b in learned.items()}
             if validation is not None else {})
    for cand in cands.values():
        log.info("advisory of %s: %s", cand.name, cand.source)
    gz = config.evaluation.grey_zone
    out, text = {}, []
    for dname, part in parts.items():
        start = time.perf_counter()
        vitals = part.vitals[part.vitals["patient_id"].isin(part.rows["patient_id"].unique())]
        judged = judge_candidates(config, rules, vitals, part.rule_events)
        for name, cand in cands.items():
            frame, breaks, scores = learned_frame(learned[name], part)
            judged[name] = judge_learned(config, rules, frame, breaks, scores, cand.threshold, part.rule_events)
        out[dname] = advisory_metrics(config, judged, cands)
        out[dname]["precursors"] = source_precursors(config, rules, part)
        text.append(table(dname, out[dname], gz.kind, gz.horizon_s))
        log.info("%s\n(judged in %.1f s)", text[-1], time.perf_counter() - start)
    return out, "\n\n".join(text) + "\n"


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
            figure(a["median_lead_s"], ".0f"), figure(a["advisory_episodes_per_hour"], ".2f"),
            figure(a["false_per_hour"], ".2f"), figure(a["ppv"], ".2f"), figure(a["time_under_advisory"], ".1%"),
            figure(m["auroc"].get(f"{focus}@{horizon_s}s"), ".3f"))))
    return "\n".join(lines)
