"""Stage `evaluate`: every trained bundle on the test patients of every source in `sources.evaluate`.

Metrics per detector (DVC metrics, and an MLflow run `evaluate-<detector>`), physiological and technical apart
(`biostream.models.metrics`; the list: docs/pipeline.md), beside two reference rows: `monitor`, the bedside monitor
without alarm delay (the rules of configs/alarms.yaml on each second's value), and `map_alone`, the current MAP
alone; and the advisory table (`advisory`): every candidate of configs/advisories.yaml judged forward on every
second of every source's patients (`biostream.reporting.advisory`), printed and in plots/advisory.txt. Plots are
DVC plots and MLflow artifacts (`biostream.reporting.evaluate`). The first source's test patients' per-second scores
and alarms go to `scores`, one parquet file per detector: what the serving parity test compares the BentoML service
with.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import mlflow

from biostream.core.config import Configs
from biostream.core.io import atomic_dir, write_json
from biostream.core.mlflow_store import setup_tracking
from biostream.core.params import Params
from biostream.features import windows_at
from biostream.features.table import FeatureSet, Part
from biostream.models.bundle import ModelBundle
from biostream.models.candidates import Advisories
from biostream.models.detectors.clinical import ClinicalThresholdDetector
from biostream.models.metrics import second_labels
from biostream.models.objective import Objective
from biostream.reporting.advisory import evaluate_advisories
from biostream.reporting.evaluate import (
    MAP_ALONE,
    MONITOR,
    REFERENCES,
    comparison,
    curves,
    flat,
    map_alone_bundle,
    monitor_bundle,
    per_window_ms,
    real_summary,
    realism,
    score_part,
    test_figures,
)
from biostream.stages import Datasets, StageError, help_of

log = logging.getLogger("biostream")


@dataclass(frozen=True, kw_only=True)
class Paths(Datasets):
    models: Path = field(metadata=help_of("the train stage's folder (bundles and index.json)"))
    features: Path = field(metadata=help_of("the featurize stage's output folder"))
    metrics: Path
    realism: Path = field(metadata=help_of("the bedside rules' alarm rate, synthetic against real (JSON)"))
    plots: Path
    scores: Path = field(metadata=help_of("folder for per-second test scores, one parquet per detector"))
    signals: Path = Path("configs/signals.yaml")
    alarms: Path = Path("configs/alarms.yaml")
    advisories: Path = Path("configs/advisories.yaml")


def run(params: Params, paths: Paths) -> dict[str, dict]:
    """Score every bundle on every source; write the metrics, realism, plots (ROC and PR curves, confusion matrices,
    score distributions, a timeline of test patients, what drives the scores, a chart comparing the detectors) and
    scores; return the metrics."""
    matplotlib.use("Agg")  # figures are files, on any machine
    configs = Configs.load(paths.signals, paths.alarms)
    advisory_config = Advisories.load(paths.advisories, configs.rules)
    objective = Objective.of(params.objective, configs.rules)
    setup_tracking(params.tracking)
    plots = paths.plots
    for sub in ("roc", "pr", "figures"):
        (plots / sub).mkdir(parents=True, exist_ok=True)

    sources = params.sources
    features = FeatureSet.open(paths.features, paths.datasets())
    parts = {}  # a training source's test patients; every patient of another source
    for source in sources.evaluate:
        if not features.has_rows(source):
            log.warning("no %s cases to evaluate on (see metrics/%s.json)", source, source)
            continue
        part = features.part(source, "test" if source in sources.train else None)
        if len(part.rows):
            parts[source] = part
    if not parts:
        raise StageError("evaluate: no test patients in any of sources.evaluate "
                         f"({', '.join(sources.evaluate)})")
    figures_of = next(iter(parts))  # the figures and curves: the first source scored (synthetic by default)

    results: dict[str, dict] = {}
    compared = []
    test_scores = {}
    bundles = {p.name: ModelBundle.load(p) for p in sorted(paths.models.iterdir()) if (p / "detector").is_dir()}
    if bundles:
        like = next(iter(bundles.values()))
        bundles[MONITOR] = monitor_bundle(like, configs)
        bundles[MAP_ALONE] = map_alone_bundle(like, configs)
    views: dict[str, dict] = {dname: {} for dname in parts}  # each source's floor views, shared by the bundles
    for name, bundle in bundles.items():
        results[name] = {}
        for dname, part in parts.items():
            start = time.perf_counter()
            scored = score_part(bundle, part, objective, views[dname])
            log.info("%s on %s: scored %d seconds in %.1f s", name, dname, len(part.rows), time.perf_counter() - start)
            m = scored.metrics
            if dname == figures_of:
                one = windows_at(part.vitals, bundle.pipeline.signals, bundle.pipeline.geometry.window_s,
                                 part.rows["patient_id"].to_numpy()[:1], part.rows["time_s"].to_numpy()[:1])
                m["score_ms_per_window"] = per_window_ms(bundle, one)
                test_scores[name] = scored.frame(part)
                positive, counted = second_labels(part.rows)
                roc, pr = curves(positive[counted], scored.scores[counted])
                roc.assign(detector=name).to_csv(plots / "roc" / f"{name}.csv", index=False)
                pr.assign(detector=name).to_csv(plots / "pr" / f"{name}.csv", index=False)
                figs = test_figures(part, scored, bundle, name)
                for kind, f in figs.items():
                    f.savefig(plots / "figures" / f"{name}_{kind}.png", dpi=90, bbox_inches="tight")
                ph = m["physiological"]
                compared.append({"detector": name, "weighted F1 (physiological)": ph["weighted_f1"],
                                 "false alarms / h (physiological)": ph["false_alarms_per_hour"],
                                 "event F1 (technical)": m["technical"]["event_f1"],
                                 "rule events caught": m["rule_events"]["recall"]})
            results[name][dname] = m
        for dname, m in results[name].items():
            if dname != figures_of and "own_alarms" in m:
                compared[-1][f"own alarm episodes / h ({dname})"] = m["own_alarms"]["alarms_per_hour"]
        with mlflow.start_run(run_name=f"evaluate-{name}", tags={"stage": "evaluate", "detector": name}):
            # the first source's metrics by their own names (the UI lines detectors up), the others prefixed
            mlflow.log_metrics({k: v for ds, m in results[name].items()
                                for k, v in flat(m, "" if ds == figures_of else f"{ds}.").items()})
            for kind in figs:  # the files saved above (log_figure would draw each figure again)
                mlflow.log_artifact(str(plots / "figures" / f"{name}_{kind}.png"), "plots")
        for f in figs.values():
            plt.close(f)
        syn, ph = results[name][figures_of], results[name][figures_of]["physiological"]
        log.info("%s: test %s %.3f; physiological recall %.3f, %.2f false alarms/h; technical F1 %.3f; rule events "
                 "caught %.3f, %.2f alarms/h, AUROC %.3f", name, objective.metric, objective.value(syn),
                 ph["event_recall"], ph["false_alarms_per_hour"], syn["technical"]["event_f1"],
                 syn["rule_events"]["recall"], syn["rule_events"]["alarms_per_hour"], syn["rule_events"]["auroc"])

    if compared:
        table, fig = comparison(compared)
        fig.savefig(plots / "figures" / "comparison.png", dpi=90, bbox_inches="tight")
        with mlflow.start_run(run_name="evaluate-comparison", tags={"stage": "evaluate"}):
            mlflow.log_artifact(str(plots / "figures" / "comparison.png"), "plots")
            mlflow.log_table(table.reset_index(), "comparison.json")
        plt.close(fig)
    with atomic_dir(paths.scores) as tmp:
        for name, frame in test_scores.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
    for dname in parts:
        if dname != figures_of:
            log.info("on %s (%.1f patient-hours): %s", dname, parts[dname].hours, "; ".join(
                real_summary(name, per[dname]) for name, per in results.items() if dname in per))
    advisory = advise(advisory_config, configs, parts, bundles, features, params, plots)
    if "clinical" in results and figures_of in results["clinical"]:
        write_json(realism(results, figures_of, advisory), paths.realism)
    # metrics files hold what is reproducible; timings go to plots/timing.json and MLflow
    write_json({**{det: {ds: {k: v for k, v in m.items() if k != "score_ms_per_window"} for ds, m in per.items()}
                   for det, per in results.items()}, "advisory": advisory}, paths.metrics)
    write_json({k: {"score_ms_per_window": v[figures_of].get("score_ms_per_window")} for k, v in results.items()},
               plots / "timing.json")
    log.info("wrote %s and %s", paths.metrics, plots)
    return {**results, "advisory": advisory}


def advise(config: Advisories, configs: Configs, parts: dict[str, Part], bundles: dict[str, ModelBundle],
           features: FeatureSet, params: Params, plots: Path) -> dict[str, dict]:
    """The advisory table of every source: the baselines and every learned detector's own score (its threshold
    calibrated on the first training source's validation patients); printed, in plots/advisory.txt and an MLflow
    run `evaluate-advisory`."""
    learned = {n: b for n, b in bundles.items()
               if n not in REFERENCES and not isinstance(b.detector, ClinicalThresholdDetector)}
    train = params.sources.train[0]
    validation = features.part(train, "val") if features.has_rows(train) else None
    advisory, text = evaluate_advisories(config, configs.rules, parts, learned, validation)
    (plots / "advisory.txt").write_text(text, encoding="utf-8")
    with mlflow.start_run(run_name="evaluate-advisory", tags={"stage": "evaluate"}):
        mlflow.log_metrics({f"{dname}.{name}.{k}": v for dname, m in advisory.items()
                            for name, c in m["candidates"].items() for k, v in c["all"].items()
                            if isinstance(v, int | float)})
        mlflow.log_artifact(str(plots / "advisory.txt"))
    return advisory

