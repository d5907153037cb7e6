"""DVC stage `evaluate`: every trained bundle on the test patients (and on VitalDB cases when there are any).

    python -m pipelines.evaluate --models models --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --metrics metrics/evaluate.json --plots plots --scores results/scores

Metrics per detector (DVC metrics, and an MLflow run `evaluate-<detector>`): AUROC, AUPRC; per-second
precision, recall and F1 of the alarms; event-level recall, precision and F1, false alarms per
patient-hour, median detection delay, recall per anomaly kind, each with and without artefacts;
early-warning AUROC (an alarm event starts within the horizon; seconds already in alarm left out); score
time per window. Plots (DVC plots and MLflow artifacts; `biostream.reporting.evaluate`): ROC and PR curves,
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

from biostream.core.config import load_yaml  # noqa: E402
from biostream.core.io import atomic_dir, write_json  # noqa: E402
from biostream.core.runtime import configure  # noqa: E402
from biostream.core.tracking import TrackingParams, setup_tracking  # noqa: E402
from biostream.features import windows_at  # noqa: E402
from biostream.features.table import FeatureSet  # noqa: E402
from biostream.models.bundle import ModelBundle  # noqa: E402
from biostream.models.evaluation import second_labels  # noqa: E402
from biostream.reporting.evaluate import comparison, curves, flat, per_window_ms, score_part, test_figures  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--models", required=True)
    p.add_argument("--features", required=True)
    p.add_argument("--synthetic", required=True)
    p.add_argument("--vitaldb", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--plots", required=True)
    p.add_argument("--scores", required=True, help="folder for per-second test scores, one parquet per detector")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_yaml(args.params)
    setup_tracking(TrackingParams.from_params(params))
    plots = Path(args.plots)
    for sub in ("roc", "pr", "figures"):
        (plots / sub).mkdir(parents=True, exist_ok=True)

    features = FeatureSet.open(args.features, {"synthetic": args.synthetic, "vitaldb": args.vitaldb})
    parts = {"synthetic": features.part("synthetic", "test")}
    vitaldb = features.part("vitaldb")
    if len(vitaldb.rows):
        parts["vitaldb"] = vitaldb
    else:
        log.warning("no VitalDB cases to evaluate on (see metrics/vitaldb.json); synthetic test patients only")

    results: dict[str, dict] = {}
    compared = []
    test_scores = {}
    for bdir in sorted(p for p in Path(args.models).iterdir() if (p / "detector").is_dir()):
        name = bdir.name
        bundle = ModelBundle.load(bdir)
        results[name] = {}
        for dname, part in parts.items():
            start = time.perf_counter()
            scored = score_part(bundle, part)
            log.info("%s on %s: scored %d seconds in %.1f s", name, dname, len(part.rows), time.perf_counter() - start)
            m = scored.metrics
            if dname == "synthetic":
                one = windows_at(part.vitals, bundle.pipeline.signals, bundle.pipeline.geometry.window_s,
                                 part.rows["patient_id"].to_numpy()[:1], part.rows["time_s"].to_numpy()[:1])
                m["score_ms_per_window"] = per_window_ms(bundle, one)
                test_scores[name] = scored.frame(part)
                roc, pr = curves(second_labels(part.rows, include_artefacts=True)[0], scored.scores)
                roc.assign(detector=name).to_csv(plots / "roc" / f"{name}.csv", index=False)
                pr.assign(detector=name).to_csv(plots / "pr" / f"{name}.csv", index=False)
                figs = test_figures(part, scored, bundle, name)
                for kind, f in figs.items():
                    f.savefig(plots / "figures" / f"{name}_{kind}.png", dpi=90, bbox_inches="tight")
                with mlflow.start_run(run_name=f"evaluate-{name}", tags={"stage": "evaluate", "detector": name}):
                    mlflow.log_metrics(flat(m))
                    for kind, f in figs.items():
                        mlflow.log_figure(f, f"plots/{name}_{kind}.png")
                for f in figs.values():
                    plt.close(f)
                compared.append({"detector": name, "event F1": m["events"]["event_f1"], "AUPRC": m["point"]["auprc"],
                                 "false alarms / h": m["events"]["false_alarms_per_hour"]})
            results[name][dname] = m
        syn = results[name]["synthetic"]
        log.info("%s: test event F1 %.3f, recall %.3f, %.2f false alarms/h, AUPRC %.3f", name,
                 syn["events"]["event_f1"], syn["events"]["event_recall"], syn["events"]["false_alarms_per_hour"],
                 syn["point"]["auprc"])

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
    # metrics files hold what is reproducible; timings go to plots/timing.json and MLflow
    write_json({det: {ds: {k: v for k, v in m.items() if k != "score_ms_per_window"} for ds, m in per.items()}
                for det, per in results.items()}, args.metrics)
    write_json({k: {"score_ms_per_window": v["synthetic"].get("score_ms_per_window")} for k, v in results.items()},
               plots / "timing.json")
    log.info("wrote %s and %s", args.metrics, plots)


if __name__ == "__main__":
    main()
