"""DVC stage `evaluate`: every trained bundle on the test patients (and on VitalDB cases when there are any).

    python -m pipelines.evaluate --models models --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --metrics metrics/evaluate.json --plots plots --scores results/scores

Metrics per detector (DVC metrics, and an MLflow run `evaluate-<detector>`), physiological and technical apart
(`biostream.models.evaluation`): per class, event recall, precision and F1 (the physiological ones also clinically
weighted), false alarms per patient-hour, median detection delay and recall per kind; per-second AUROC, AUPRC,
precision, recall and F1 of the physiological class; the bedside view (rule-defined events caught, alarm episodes
per hour, AUROC against "inside a rule event"); early-warning AUROC; score time per window. Besides the trained
bundles, `monitor` is the bedside monitor without alarm delay (the rules of configs/alarms.yaml on each second's
value), a reference row. Plots (DVC plots and MLflow artifacts; `biostream.reporting.evaluate`): ROC and PR curves,
confusion matrices, score distributions, a timeline of test patients, what drives the scores, and a chart
comparing the detectors. Per-second scores and alarms of the synthetic test patients, one parquet file per
detector in `--scores` (what the serving parity test compares the BentoML service with).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402

from biostream.core.config import Configs  # noqa: E402
from biostream.core.io import atomic_dir, write_json  # noqa: E402
from biostream.core.params import load_params  # noqa: E402
from biostream.core.runtime import configure  # noqa: E402
from biostream.core.tracking import TrackingParams, setup_tracking  # noqa: E402
from biostream.features import windows_at  # noqa: E402
from biostream.features.table import FeatureSet, SourceParams  # noqa: E402
from biostream.models.bundle import ModelBundle  # noqa: E402
from biostream.models.evaluation import Objective, second_labels  # noqa: E402
from biostream.reporting.evaluate import (  # noqa: E402
    MAP_ALONE,
    MONITOR,
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--models", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--vitaldb", required=True)
    p.add_argument("--recordings", required=True)
    p.add_argument("--real", required=True, help="the ingest_real stage's output folder")
    p.add_argument("--metrics", required=True)
    p.add_argument("--realism", required=True, help="the bedside rules' alarm rate, synthetic against real (JSON)")
    p.add_argument("--plots", required=True)
    p.add_argument("--scores", required=True, help="folder for per-second test scores, one parquet per detector")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    configs = Configs.load(args.signals, args.alarms)
    objective = Objective.from_params(params, configs.rules)
    setup_tracking(TrackingParams.from_params(params))
    plots = Path(args.plots)
    for sub in ("roc", "pr", "figures"):
        (plots / sub).mkdir(parents=True, exist_ok=True)

    sources = SourceParams.from_params(params)
    features = FeatureSet.open(args.features, {"synthetic": args.synthetic, "vitaldb": args.vitaldb,
                                               "recordings": args.recordings, "real": args.real})
    parts = {}  # a training source's test patients; every patient of another source
    for source in sources.evaluate:
        if not features.has_rows(source):
            log.warning("no %s cases to evaluate on (see metrics/%s.json)", source, source)
            continue
        part = features.part(source, "test" if source in sources.train else None)
        if len(part.rows):
            parts[source] = part
    if not parts:
        raise SystemExit("evaluate: no test patients in any of sources.evaluate "
                         f"({', '.join(sources.evaluate)})")
    figures_of = next(iter(parts))  # the figures and curves: the first source scored (synthetic by default)

    results: dict[str, dict] = {}
    compared = []
    test_scores = {}
    bundles = {p.name: ModelBundle.load(p) for p in sorted(Path(args.models).iterdir()) if (p / "detector").is_dir()}
    if bundles:
        like = next(iter(bundles.values()))
        bundles[MONITOR] = monitor_bundle(like, configs)
        bundles[MAP_ALONE] = map_alone_bundle(like, configs)
    for name, bundle in bundles.items():
        results[name] = {}
        for dname, part in parts.items():
            start = time.perf_counter()
            scored = score_part(bundle, part, objective)
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
            for kind, f in figs.items():
                mlflow.log_figure(f, f"plots/{name}_{kind}.png")
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
            mlflow.log_figure(fig, "plots/comparison.png")
            mlflow.log_table(table.reset_index(), "comparison.json")
        plt.close(fig)
    with atomic_dir(args.scores) as tmp:
        for name, frame in test_scores.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
    for dname in parts:
        if dname != figures_of:
            log.info("on %s (%.1f patient-hours): %s", dname, parts[dname].hours, "; ".join(
                real_summary(name, per[dname]) for name, per in results.items() if dname in per))
    if "clinical" in results and figures_of in results["clinical"]:
        write_json(realism(results, figures_of), args.realism)
    # metrics files hold what is reproducible; timings go to plots/timing.json and MLflow
    write_json({det: {ds: {k: v for k, v in m.items() if k != "score_ms_per_window"} for ds, m in per.items()}
                for det, per in results.items()}, args.metrics)
    write_json({k: {"score_ms_per_window": v[figures_of].get("score_ms_per_window")} for k, v in results.items()},
               plots / "timing.json")
    log.info("wrote %s and %s", args.metrics, plots)


if __name__ == "__main__":
    main()
