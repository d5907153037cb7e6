"""Champion selection in the MLflow model registry: the pure pieces (`RegisterParams`, `Safety`, `safety_check`,
`metric_at`, `choose`, `decide`, `fingerprint`, `model_card`, `Decision`); the MLflow calls are
`biostream.tracking.register`'s. The procedure: docs/studies-and-registry.md#the-model-registry.

A model that fails the safety floor (`safety_check`) is never champion; `champion` moves to a challenger only when it
beats the current champion **re-scored on today's test patients with today's code** (`decide`; a tie keeps the
champion). The whole read-compare-set runs under a lock, and an alias is one atomic call: never two champions,
never a half-set alias.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from biostream.core.params import RegisterParams, RegisterSafety  # noqa: F401 (params.yaml: its section)

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Safety:
    """A challenger against the safety floor on the test patients: per clinical kind its physiological event recall
    and the baseline's (it passes a kind when it is at least the baseline's minus the margin), and its physiological
    false alarms per patient-hour against the baseline's (at most as many); and on each real source (`real`) its
    own alarm episodes per patient-hour (those its floor alone would not raise) within the budget and the rule
    events it catches at least the baseline's. `passed` only if everything passes."""

    baseline: str
    margin: float
    kinds: dict[str, dict[str, float | bool | None]]
    false_alarms_per_hour: dict[str, float | bool | None]
    real: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (all(k["ok"] for k in self.kinds.values()) and bool(self.false_alarms_per_hour["ok"])
                and all(r["ok"] for r in self.real.values()))

    def failures(self) -> list[str]:
        out = [f"{k}: recall {fmt(v['challenger'])} < {fmt(v['baseline'])}" for k, v in self.kinds.items()
               if not v["ok"]]
        fa = self.false_alarms_per_hour
        if not fa["ok"]:
            out.append(f"physiological false alarms {fmt(fa['challenger'], '.2f')}/h > {fmt(fa['baseline'], '.2f')}/h")
        return out + [m for src, r in self.real.items() for m in real_failures(src, r)]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def real_check(challenger: Mapping[str, Any], baseline: Mapping[str, Any], budget: float) -> dict[str, Any]:
    """A challenger's figures on one real source (its metrics there, as `evaluate_scores` returns them) against the
    budget of own alarm episodes per patient-hour and the baseline's rule events caught."""
    own = challenger.get("own_alarms", {}).get("alarms_per_hour")
    recall, b_recall = challenger["rule_events"]["recall"], baseline["rule_events"]["recall"]
    own_ok = own is not None and own == own and own <= budget + 1e-12
    recall_ok = b_recall is None or b_recall != b_recall or (recall is not None and recall >= b_recall - 1e-12)
    return {"own_alarms_per_hour": own, "budget": budget,
            "alarms_per_hour": challenger["rule_events"]["alarms_per_hour"],
            "physiological_alarms_per_hour": challenger["physiological"]["alarms_per_hour"],
            "baseline_alarms_per_hour": baseline["rule_events"]["alarms_per_hour"], "rule_events_recall": recall,
            "baseline_rule_events_recall": b_recall, "early_warning_auroc": challenger.get("early_warning_auroc"),
            "own_ok": own_ok, "recall_ok": recall_ok, "ok": own_ok and recall_ok}


def real_failures(source: str, check: Mapping[str, Any]) -> list[str]:
    """What a `real_check` fails, in words."""
    out = []
    if not check["own_ok"]:
        out.append(f"{source} recordings: {fmt(check['own_alarms_per_hour'], '.2f')} own alarm episodes/h > budget "
                   f"{fmt(check['budget'], '.2f')}/h")
    if not check["recall_ok"]:
        out.append(f"{source} recordings: rule events caught {fmt(check['rule_events_recall'])} < "
                   f"{fmt(check['baseline_rule_events_recall'])}")
    return out


def real_figures(evaluation: Mapping[str, Any], candidate: str, rp: RegisterParams) -> dict[str, dict[str, Any]]:
    """`real_check` of a candidate on every real source of `rp` that the evaluation scored."""
    mine, base = evaluation[candidate], evaluation[rp.baseline]
    return {src: real_check(mine[src], base[src], rp.max_own_alarms_per_hour) for src in rp.real_sources
            if src in mine and src in base}


def safety_check(challenger: Mapping[str, Any], baseline: Mapping[str, Any], clinical_kinds: Sequence[str],
                 margin: float, baseline_name: str, real: Mapping[str, dict[str, Any]] | None = None) -> Safety:
    """`Safety` of a challenger's test metrics (one dataset's, as `evaluate_scores` returns them) against the
    baseline's, with its `real_check`s (`real`). A kind without test events is listed and passes; a challenger
    without an alarm fails every kind the baseline catches."""
    ch, base = challenger["physiological"], baseline["physiological"]
    kinds = {}
    for kind in clinical_kinds:
        b = base["recall_by_kind"].get(kind)
        c = ch["recall_by_kind"].get(kind, 0.0 if b is not None else None)
        ok = b is None or (c is not None and c >= b - margin - 1e-12)
        kinds[kind] = {"challenger": c, "baseline": b, "ok": ok}
    c_fa, b_fa = ch["false_alarms_per_hour"], base["false_alarms_per_hour"]
    fa_ok = c_fa is not None and b_fa is not None and c_fa <= b_fa + 1e-12
    return Safety(baseline_name, margin, kinds, {"challenger": c_fa, "baseline": b_fa, "ok": fa_ok}, dict(real or {}))


def lookup(metrics: Mapping[str, Any], path: str) -> Any:
    """A value by dotted path ("events.event_f1") in one detector's metrics, as stored (None, NaN kept)."""
    value: Any = metrics
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(f"metric '{path}' not found (no '{key}'); see metrics/evaluate.json for the names")
        value = value[key]
    return value


def metric_at(metrics: Mapping[str, Any], path: str) -> float:
    """A metric by dotted path that must be a number; NaN/None -> error."""
    value = lookup(metrics, path)
    if value is None or not isinstance(value, int | float) or value != value:
        raise ValueError(f"metric '{path}' is {value!r}, not a number")
    return float(value)


def choose(evaluation: Mapping[str, Any], candidates: Sequence[str], metric: str, dataset: str = "synthetic",
           safe: Mapping[str, bool] | None = None) -> tuple[str, float]:
    """The candidate with the highest primary metric on the dataset among those that pass the safety floor (`safe`:
    candidate -> passed; all when None), or the best of all when none passes (it is registered as challenger only);
    ties: the first in `candidates`."""
    missing = [c for c in candidates if c not in evaluation]
    if missing:
        raise KeyError(f"register.candidates {missing} have no metrics in the evaluation; evaluated: "
                       f"{sorted(evaluation)}")
    scored = []
    for i, c in enumerate(candidates):
        try:
            scored.append((bool(safe is None or safe.get(c, False)), metric_at(evaluation[c][dataset], metric), -i, c))
        except ValueError:  # e.g. precision of a detector that never alarmed: it cannot be chosen
            continue
    if not scored:
        raise ValueError(f"no candidate among {list(candidates)} has a numeric '{metric}'")
    _, value, _, name = max(scored)
    return name, value


def fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    """A metric for the model card and tags: 'n/a' when it is undefined (None or NaN)."""
    if value is None or not isinstance(value, int | float) or value != value:
        return "n/a"
    return f"{value:{spec}}{unit}"


def decide(challenger: float, champion: float | None, min_improvement: float,
           safety: Safety | None = None) -> tuple[bool, str]:
    """Promote the challenger? Never when it fails the safety floor; otherwise only when there is no champion or it
    is strictly better by more than `min_improvement` (a tie keeps the champion)."""
    if safety is not None and not safety.passed:
        return False, (f"challenger fails the safety floor against {safety.baseline} ({'; '.join(safety.failures())}): "
                       f"it stays challenger, whatever its metric")
    if champion is None:
        return True, "no champion yet"
    if challenger > champion + min_improvement:
        return True, f"challenger {challenger:.4f} beats champion {champion:.4f} (margin {min_improvement:g})"
    return False, f"challenger {challenger:.4f} does not beat champion {champion:.4f} (margin {min_improvement:g})"


def fingerprint(bundle_dir: Path, detector: str, metrics: Mapping[str, Any]) -> str:
    """What makes a version: the bundle's bytes, the detector and its test metrics."""
    h = hashlib.sha256(detector.encode())
    for f in sorted(p for p in bundle_dir.rglob("*") if p.is_file()):
        h.update(f.relative_to(bundle_dir).as_posix().encode())
        h.update(f.read_bytes())
    h.update(json.dumps(metrics, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def model_card(detector: str, metrics: Mapping[str, Any], policy: Mapping[str, Any], data: Mapping[str, Any],
               limits: Sequence[str], safety: Safety | None = None,
               advisory: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> str:
    """The registered version's description: what it is, on what data, how good per class, how safe, and what it
    misses."""
    ph, te, pt, bed = metrics["physiological"], metrics["technical"], metrics["point"], metrics.get("rule_events", {})
    missed = sorted(k for k, v in ph["recall_by_kind"].items() if v < 0.5)
    lines = [
        f"# {detector}: vital-sign anomaly detector (BioStream)",
        "",
        "Input: raw 1 Hz vital-sign windows (signals x window_s, NaN = missing); output: a score (> 0: above the "
        "alarm threshold), the alarm and its class (physiological or technical). The feature pipeline, the safety "
        "floor (the bedside rules) and the technical checks travel with the model.",
        "",
        "## Data",
        f"- Synthetic cohort: {data.get('patients', '?')} patients, {data.get('hours', '?')} patient-hours, "
        "patient-level train/validation/test splits; threshold calibrated on validation patients, metrics on "
        f"the {data.get('test_patients', '?')} test patients.",
        f"- VitalDB cases evaluated: {data.get('vitaldb_cases', 'none')}.",
        "",
        "## Test metrics (synthetic test patients)",
        "| class | event F1 | weighted F1 | event recall | event precision | false alarms / patient-hour | median "
        "delay |",
        "|---|---|---|---|---|---|---|",
        f"| physiological | {fmt(ph['event_f1'])} | {fmt(ph.get('weighted_f1'))} | {fmt(ph['event_recall'])} | "
        f"{fmt(ph['event_precision'])} | {fmt(ph['false_alarms_per_hour'], '.2f')} | "
        f"{fmt(ph['median_delay_s'], '.0f', ' s')} |",
        f"| technical | {fmt(te['event_f1'])} | | {fmt(te['event_recall'])} | {fmt(te['event_precision'])} | "
        f"{fmt(te['false_alarms_per_hour'], '.2f')} | {fmt(te['median_delay_s'], '.0f', ' s')} |",
        "",
        f"Physiological seconds: AUROC {fmt(pt['auroc'])}, AUPRC {fmt(pt['auprc'])}. Bedside view (rule-defined "
        f"events): {fmt(bed.get('recall'))} caught, {fmt(bed.get('alarms_per_hour'), '.2f')} alarms per "
        f"patient-hour, AUROC {fmt(bed.get('auroc'))}.",
        "",
    ]
    if safety is not None:
        lines += [
            f"## Safety floor (against {safety.baseline}: {'passed' if safety.passed else 'FAILED'})",
            "| clinical kind | recall | baseline recall | ok |",
            "|---|---|---|---|",
            *[f"| {k} | {fmt(v['challenger'])} | {fmt(v['baseline'])} | {'yes' if v['ok'] else 'no'} |"
              for k, v in safety.kinds.items()],
            f"| physiological false alarms / h | {fmt(safety.false_alarms_per_hour['challenger'], '.2f')} | "
            f"{fmt(safety.false_alarms_per_hour['baseline'], '.2f')} | "
            f"{'yes' if safety.false_alarms_per_hour['ok'] else 'no'} |",
            "",
        ]
    if safety is not None and safety.real:
        lines += [
            f"## Real recordings (against {safety.baseline}, the floor alone)",
            "What the model adds and costs on real monitoring data: its own alarm episodes are those its floor alone "
            "would not raise; the budget is `register.safety.max_own_alarms_per_hour`.",
            "",
            "| source | rule events caught (floor alone) | alarm episodes / h (floor alone) | physiological / h | "
            "own alarm episodes / h (budget) | early-warning AUROC | ok |",
            "|---|---|---|---|---|---|---|",
            *[f"| {src} | {fmt(r['rule_events_recall'])} ({fmt(r['baseline_rule_events_recall'])}) | "
              f"{fmt(r['alarms_per_hour'], '.2f')} ({fmt(r['baseline_alarms_per_hour'], '.2f')}) | "
              f"{fmt(r['physiological_alarms_per_hour'], '.2f')} | {fmt(r['own_alarms_per_hour'], '.2f')} "
              f"({fmt(r['budget'], '.2f')}) | {fmt(r['early_warning_auroc'])} | {'yes' if r['ok'] else 'no'} |"
              for src, r in safety.real.items()],
            "",
        ]
    if advisory is not None:
        lines += advisory_card(*advisory)
    lines += [
        f"Score 0 is the threshold; alarm after {policy['k']} of {policy['n']} s above it, per class, refractory "
        f"{policy['refractory_s']} s, event tolerance {policy['tolerance_s']} s.",
        "",
        "## Known limits",
        f"- Physiological kinds caught less than half the time on the test patients: {', '.join(missed) or 'none'}.",
        *[f"- {x}" for x in limits],
    ]
    return "\n".join(lines)


def advisory_card(choice: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """The model card's advisory section: which candidate advises and why, and every candidate's figures on the
    source that decided (`biostream.models.forward.choose_advisory`)."""
    lines = ["## Advisory (a warning before a bedside limit is crossed; never instead of an alarm)",
             f"Advises: **{choice['source']}** ({choice.get('type', '?')}). {choice['why']}", ""]
    if metrics.get("candidates"):
        lines += [f"Every candidate on {choice['decided_on']} ({metrics['patients']} patients, "
                  f"{metrics['hours']:.1f} h; forward, every second; docs/advisories.md):", "",
                  "| candidate | new-onset warned | events warned | median lead | false advisory episodes / h | "
                  "time under advisory |", "|---|---|---|---|---|---|"]
        for name, c in metrics["candidates"].items():
            a = c["all"]
            lines.append(f"| {name} | {a['new_onset_warned']}/{a['new_onset']} | {a['warned']}/{a['events']} | "
                         f"{fmt(a['median_lead_s'], '.0f', ' s')} | {fmt(a['false_per_hour'], '.2f')} | "
                         f"{fmt(a['time_under_advisory'], '.1%')} |")
        lines.append("")
    return lines


@dataclass
class Decision:
    """What the register stage did and why (written to the DVC-tracked JSON and the version's tags)."""

    model_name: str
    detector: str
    challenger_version: str
    created: bool
    champion_before: str | None
    champion_after: str
    promoted: bool
    reason: str
    metric: str
    challenger_value: float
    champion_value: float | None
    fingerprint: str
    safety: dict[str, Any] = field(default_factory=dict)  # `Safety.to_dict()` of the challenger
    candidates_safety: dict[str, bool] = field(default_factory=dict)  # every candidate: passes the floor?
    notes: list[str] = field(default_factory=list)
    real: dict[str, Any] = field(default_factory=dict)  # every candidate's `real_check` per real source
    advisory: dict[str, Any] = field(default_factory=dict)  # `choose_advisory`: the champion's advisory source, why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
