"""DVC stage `evaluate`: every trained bundle on the test patients (and on VitalDB cases when there are any).

    python -m pipelines.evaluate --models models --features data/features --synthetic data/synthetic \\
        --vitaldb data/vitaldb --metrics metrics/evaluate.json --plots plots --scores results/scores

Metrics per detector (DVC metrics, and an MLflow run `evaluate-<detector>`): AUROC, AUPRC; per-second
precision, recall and F1 of the alarms; event-level recall, precision and F1, false alarms per
patient-hour, median detection delay, recall per anomaly kind, each with and without artefacts;
early-warning AUROC (an alarm event starts within the horizon; seconds already in alarm left out); score
time per window. Plots (DVC plots and MLflow artifacts): ROC and PR curves, confusion matrices, score
distributions, a timeline of test patients, what drives the scores (per-signal contributions for every
detector, and a SHAP summary for the feature-reading models, on a seeded sample of test seconds), and a
chart comparing the detectors. Per-second scores and alarms of the synthetic test patients, one parquet file
per detector in `--scores` (what the serving parity test compares the BentoML service with).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from biostream.bundle import ModelBundle  # noqa: E402
from biostream.config import load_yaml  # noqa: E402
from biostream.dataset import Dataset, read_dataset  # noqa: E402
from biostream.detectors.base import score_rows  # noqa: E402
from biostream.evaluation import evaluate_scores, second_labels  # noqa: E402
from biostream.features import windows_at  # noqa: E402
from biostream.io import atomic_dir, write_json  # noqa: E402
from biostream.plots import plot_shap_summary, plot_signal_contributions  # noqa: E402
from biostream.runtime import configure  # noqa: E402
from biostream.tracking import TrackingParams, setup_tracking  # noqa: E402

CURVE_POINTS = 200
EXPLAIN_ROWS = 60  # anomalous and as many normal test seconds explained for the importance plots


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


def curves(labels: np.ndarray, scores: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    keep_roc = np.unique(np.linspace(0, len(fpr) - 1, CURVE_POINTS).astype(int))
    keep_pr = np.unique(np.linspace(0, len(recall) - 1, CURVE_POINTS).astype(int))
    return (pd.DataFrame({"fpr": fpr[keep_roc], "tpr": tpr[keep_roc]}),
            pd.DataFrame({"recall": recall[keep_pr], "precision": precision[keep_pr]}))


def timeline(ds: Dataset, rows: pd.DataFrame, scores: np.ndarray, bundle: ModelBundle, patient: str,
             name: str) -> plt.Figure:
    rec = ds.vitals[ds.vitals["patient_id"] == patient]
    mine = (rows["patient_id"] == patient).to_numpy()
    minutes = rec["time_s"].to_numpy() / 60
    shown = ("hr", "spo2", "map", "etco2")
    fig, axes = plt.subplots(len(shown) + 1, 1, figsize=(12, 9), sharex=True)
    for ax, s in zip(axes, shown, strict=False):
        ax.plot(minutes, rec[s].to_numpy(), lw=0.6, color="black")
        ax.set_ylabel(s)
    ax = axes[-1]
    ax.plot(rows.loc[mine, "time_s"].to_numpy() / 60, scores[mine], lw=0.6, color="tab:blue", label="score")
    ax.axhline(bundle.threshold, color="tab:red", lw=0.8, ls="--", label="threshold")
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=7)
    for ev in ds.events[ds.events["patient_id"] == patient].itertuples():
        colour = "tab:grey" if ev.category == "artefact" else "tab:red"
        for a in axes:
            a.axvspan(ev.start_s / 60, ev.end_s / 60, color=colour, alpha=0.2, lw=0)
        axes[0].annotate(ev.kind, (ev.start_s / 60, 1.02), xycoords=("data", "axes fraction"), fontsize=7)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"{name}: test patient {patient}")
    fig.tight_layout()
    return fig


def importance_figures(ds: Dataset, rows: pd.DataFrame, bundle: ModelBundle, name: str) -> dict[str, plt.Figure]:
    """What drives the scores, on a seeded sample of anomalous and normal test seconds."""
    label = rows["label"].to_numpy() == 1
    picks = [rows[mask].sample(min(EXPLAIN_ROWS, int(mask.sum())), random_state=0) for mask in (label, ~label)]
    sample = pd.concat(picks)
    view = bundle.pipeline.view_of_rows(bundle.detector.input_view, sample, ds.vitals)
    expl = bundle.explain_view(view)
    anomalous = sample["label"].to_numpy() == 1
    figs = {"signals": plot_signal_contributions(expl.signals, anomalous, f"{name}: what drives the score (test)")}
    if expl.features is not None:
        figs["shap"] = plot_shap_summary(expl.features, view, f"{name}: SHAP values of {len(sample)} test seconds")
    return figs


def per_window_ms(bundle: ModelBundle, window: np.ndarray, repeats: int = 100) -> float:
    bundle.score(window)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        bundle.score(window)
        times.append((time.perf_counter() - start) * 1e3)
    return float(statistics.median(times))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_yaml(args.params)
    setup_tracking(TrackingParams.from_params(params))
    plots = Path(args.plots)
    for sub in ("roc", "pr", "figures"):
        (plots / sub).mkdir(parents=True, exist_ok=True)

    datasets = {"synthetic": (read_dataset(args.synthetic), pd.read_parquet(Path(args.features) / "synthetic.parquet"))}
    vitaldb = pd.read_parquet(Path(args.features) / "vitaldb.parquet")
    if len(vitaldb):
        datasets["vitaldb"] = (read_dataset(args.vitaldb), vitaldb)
    else:
        log.warning("no VitalDB cases to evaluate on (see metrics/vitaldb.json); synthetic test patients only")

    results: dict[str, dict] = {}
    comparison = []
    test_scores: dict[str, pd.DataFrame] = {}
    bundles = sorted(p for p in Path(args.models).iterdir() if (p / "detector").is_dir())
    for bdir in bundles:
        name = bdir.name
        bundle = ModelBundle.load(bdir)
        results[name] = {}
        for dname, (ds, table) in datasets.items():
            rows = table[table["split"] == "test"] if dname == "synthetic" else table
            rows = rows.reset_index(drop=True)
            events = ds.events[ds.events["patient_id"].isin(rows["patient_id"].unique())]
            start = time.perf_counter()
            scores = score_rows(bundle.detector, bundle.pipeline, rows, ds.vitals)
            log.info("%s on %s: scored %d seconds in %.1f s", name, dname, len(rows), time.perf_counter() - start)
            m, alarm = evaluate_scores(rows, events, scores, bundle.threshold, bundle.policy)
            if dname == "synthetic":
                one = windows_at(ds.vitals, bundle.pipeline.signals, bundle.pipeline.geometry.window_s,
                                 rows["patient_id"].to_numpy()[:1], rows["time_s"].to_numpy()[:1])
                m["score_ms_per_window"] = per_window_ms(bundle, one)
                test_scores[name] = pd.DataFrame({"patient_id": rows["patient_id"], "time_s": rows["time_s"],
                                                  "score": scores, "alarm": alarm.astype(np.int8)})
                # the positives of the per-second metrics: anomalies and artefacts (events to catch)
                positive = second_labels(rows, include_artefacts=True)[0]
                roc, pr = curves(positive, scores)
                roc.assign(detector=name).to_csv(plots / "roc" / f"{name}.csv", index=False)
                pr.assign(detector=name).to_csv(plots / "pr" / f"{name}.csv", index=False)
                figs = {"timeline": timeline(ds, rows, scores, bundle, sorted(rows["patient_id"].unique())[0], name)}
                fig, ax = plt.subplots(figsize=(6, 4))
                for lab, colour in ((False, "tab:blue"), (True, "tab:red")):
                    sel = positive == lab
                    ax.hist(scores[sel], bins=80, alpha=0.5, density=True, color=colour,
                            label="anomaly or artefact" if lab else "normal")
                ax.axvline(bundle.threshold, color="black", ls="--", lw=0.8, label="threshold")
                ax.set_title(f"{name}: score distributions (test)")
                ax.legend()
                figs["scores"] = fig
                cm = np.array([[((positive == a) & (alarm == b)).sum() for b in (0, 1)] for a in (0, 1)])
                fig, ax = plt.subplots(figsize=(4, 4))
                ax.imshow(cm, cmap="Blues")
                for (i, j), v in np.ndenumerate(cm):
                    ax.text(j, i, f"{v:,}", ha="center", va="center")
                ax.set_xticks([0, 1], ["no alarm", "alarm"])
                ax.set_yticks([0, 1], ["normal", "anomaly or\nartefact"])
                ax.set_title(f"{name}: seconds (test)")
                figs["confusion"] = fig
                figs.update(importance_figures(ds, rows, bundle, name))
                for kind, f in figs.items():
                    f.savefig(plots / "figures" / f"{name}_{kind}.png", dpi=90, bbox_inches="tight")
                with mlflow.start_run(run_name=f"evaluate-{name}", tags={"stage": "evaluate", "detector": name}):
                    mlflow.log_metrics(_flat(m))
                    for kind, f in figs.items():
                        mlflow.log_figure(f, f"plots/{name}_{kind}.png")
                for f in figs.values():
                    plt.close(f)
                comparison.append({"detector": name, "event F1": m["events"]["event_f1"],
                                   "AUPRC": m["point"]["auprc"],
                                   "false alarms / h": m["events"]["false_alarms_per_hour"]})
            results[name][dname] = m
        syn = results[name]["synthetic"]
        log.info("%s: test event F1 %.3f, recall %.3f, %.2f false alarms/h, AUPRC %.3f", name,
                 syn["events"]["event_f1"], syn["events"]["event_recall"], syn["events"]["false_alarms_per_hour"],
                 syn["point"]["auprc"])

    if comparison:
        cmp = pd.DataFrame(comparison).set_index("detector")
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for ax, col in zip(axes, cmp.columns, strict=True):
            cmp[col].plot.bar(ax=ax, color="tab:blue")
            ax.set_title(col)
            ax.set_xlabel("")
        fig.suptitle("detectors on the synthetic test patients")
        fig.tight_layout()
        fig.savefig(plots / "figures" / "comparison.png", dpi=90, bbox_inches="tight")
        with mlflow.start_run(run_name="evaluate-comparison", tags={"stage": "evaluate"}):
            mlflow.log_figure(fig, "plots/comparison.png")
            mlflow.log_table(cmp.reset_index(), "comparison.json")
        plt.close(fig)
    with atomic_dir(args.scores) as tmp:
        for name, frame in test_scores.items():
            frame.to_parquet(tmp / f"{name}.parquet", index=False)
    write_json(_without_timing(results), args.metrics)
    write_json({k: {"score_ms_per_window": v["synthetic"].get("score_ms_per_window")} for k, v in results.items()},
               plots / "timing.json")
    log.info("wrote %s and %s", args.metrics, plots)


def _flat(m: dict, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in m.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, f"{key}."))
        elif isinstance(v, int | float) and v == v and v is not None:
            out[key.replace("/", "_")] = float(v)
    return out


def _without_timing(results: dict) -> dict:
    """Metrics files hold what is reproducible; timings go to plots/timing.json and MLflow."""
    return {det: {ds: {k: v for k, v in m.items() if k != "score_ms_per_window"} for ds, m in per.items()}
            for det, per in results.items()}


if __name__ == "__main__":
    main()
