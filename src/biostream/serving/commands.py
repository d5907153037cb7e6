"""`biostream report` and `biostream monitor`: a bed's case report, and the live patients against the model's
reference, read from the stream store with the model the service serves (the BentoML model store's champion, as
`package` imported it: `results/bento.json` names its home). `monitor --mlflow` logs the report to MLflow against
the serving model's registered version, whose model card then links it (docs/monitoring.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError


def served_scorer() -> Any:
    """The Scorer of the model the service serves (the BentoML model store's latest champion)."""
    if not os.environ.get("BENTOML_HOME") and Path("results/bento.json").is_file():
        home = json.loads(Path("results/bento.json").read_text())["bentoml_home"]
        os.environ["BENTOML_HOME"] = str(Path(home).resolve())
    import bentoml

    from biostream.models.bundle import ModelBundle
    from biostream.serving.scorer import Scorer
    from biostream.serving.spec import BENTO_MODEL, MLFLOW_MODEL_DIR, ServingSpec, bundle_dir

    try:
        model = bentoml.models.get(f"{BENTO_MODEL}:latest")
    except bentoml.exceptions.NotFound:
        raise ConfigError(f"no served model in the BentoML store ({os.environ.get('BENTOML_HOME', '~/bentoml')}): "
                          "run `make run` (its package stage imports it), or set BENTOML_HOME") from None
    return Scorer(ModelBundle.load(bundle_dir(model.path_of(MLFLOW_MODEL_DIR))), ServingSpec.of_model(
        model.info.metadata))


def report(store_url: str, bed: str, since: str | None, until: str | None, out: Path, formats: list[str]) -> list[Path]:
    """Write a bed's case report in each of `formats` under `out`; the files written."""
    from biostream.serving.board import report_period
    from biostream.serving.streaming.cases import case_of_bed
    from biostream.serving.streaming.messages import time_text
    from biostream.serving.streaming.store import Store

    store = Store(store_url)
    try:
        period = report_period(store, bed, None if since is None else time_text(since, "--since"),
                               None if until is None else time_text(until, "--until"))
        if isinstance(period, str):
            raise ValueError(f"{period} (store {store_url}: check the bed id and --store)")
        case = case_of_bed(store, served_scorer(), bed, *period)
    finally:
        store.dispose()
    return write_case(case, out, formats)


def write_case(case: Any, out: Path, formats: list[str]) -> list[Path]:
    """A case's documents in `formats`, as `out/case-<subject>.<html|pdf|txt>`; the files written."""
    from biostream.reporting.case import render

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = out / f"case-{case.subject}.{'txt' if fmt == 'text' else fmt}"
        path.write_bytes(render(case, fmt))
        written.append(path)
    return written


def report_recording(path: Path, start: str, out: Path, formats: list[str]) -> list[Path]:
    """Write the case report of a recording file (CSV or Parquet, as `ingest_recordings` reads it: params.yaml and
    configs/signals.yaml where the command runs), scored whole by the served model, its first second at `start`."""
    from datetime import UTC, datetime

    import numpy as np

    from biostream.core.config import load_signals
    from biostream.core.params import load_params
    from biostream.reporting.case import case_of_recording
    from biostream.serving.streaming.messages import time_text
    from biostream.sources.recordings import RecordingError, read_recording

    if not Path("params.yaml").is_file() or not Path("configs/signals.yaml").is_file():
        raise ConfigError("a recording's report reads it as the pipeline does: run it in the project folder "
                          "(params.yaml, configs/signals.yaml)")
    params = load_params("params.yaml")
    try:
        frame, _ = read_recording(path, load_signals("configs/signals.yaml"), params.ingest_recordings)
    except RecordingError as error:
        raise ValueError(str(error)) from None
    scorer = served_scorer()
    values = np.vstack([frame[s].to_numpy(dtype=np.float64) if s in frame else np.full(len(frame), np.nan)
                        for s in scorer.spec.signals])
    first = datetime.fromtimestamp(time_text(start, "--start"), UTC)
    return write_case(case_of_recording(scorer, values, first, path.stem), out, formats)


def monitor(store_url: str, since: str | None, until: str | None, out: Path, params: Any,
            mlflow_uri: str | None = None) -> dict[str, Any]:
    """Check a period of the store against the served model's reference; write `out/monitoring.json` and
    `out/monitoring.html`; with `mlflow_uri`, log them to MLflow against the serving model's version."""
    import time

    from biostream.monitoring.live import check
    from biostream.reporting.case import limits_of
    from biostream.serving.streaming.messages import time_text
    from biostream.serving.streaming.store import Store

    scorer = served_scorer()
    reference = scorer.bundle.reference
    if reference is None:
        raise ConfigError("the served model carries no reference of its training inputs (trained before "
                          "monitoring existed): re-run `dvc repro` (train and package)")
    end = int(time.time()) + 1 if until is None else time_text(until, "--until")
    start = None if since is None else time_text(since, "--since")
    store = Store(store_url)
    try:
        advisor = scorer.spec.advisor
        state = check(store, reference, scorer.spec.signals, limits_of(scorer.bundle), params, end, start,
                      model=scorer.model.model_dump(), advisory_per_hour=None if advisor is None else
                      advisor.episodes_per_hour)
    finally:
        store.dispose()
    out.mkdir(parents=True, exist_ok=True)
    (out / "monitoring.json").write_text(json.dumps(state, indent=1))
    (out / "monitoring.html").write_text(html(state))
    if mlflow_uri:
        state["mlflow"] = log_to_mlflow(state, out, mlflow_uri, scorer.spec)
        (out / "monitoring.json").write_text(json.dumps(state, indent=1))
    return state


def html(state: dict[str, Any]) -> str:
    import html as h

    p = state["period"]
    rows = "".join(
        f"<tr><td>{h.escape(s)}</td><td>{'' if v['psi'] is None else format(v['psi'], '.3f')}</td>"
        f"<td>{'' if v['missing'] is None else format(v['missing'], '.1%')}</td>"
        f"<td>{'' if v['reference_missing'] is None else format(v['reference_missing'], '.1%')}</td>"
        f"<td>{'drifted' if v['drifted'] else ''}</td></tr>" for s, v in state["signals"].items())
    alerts = "".join(f"<li>{h.escape(a['message'])}</li>" for a in state["alerts"]) or "<li>none</li>"
    rates = ", ".join(f"{c}: {'n/a' if r is None else format(r, '.2f')} (validation "
                      f"{state['reference_alarms_per_bed_hour'].get(c, float('nan')):.2f})"
                      for c, r in state["alarms_per_bed_hour"].items())
    rec = state["recall"]
    recall = "" if rec["recall"] is None else f" ({rec['recall']:.2f})"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Monitoring {h.escape(p['since'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 8px}"
            "table{border-collapse:collapse}</style></head><body>"
            f"<h1>Monitoring: {h.escape(p['since'])} to {h.escape(p['until'])}</h1>"
            f"<p>{p['beds']} beds{' (a sample)' if p['sampled'] else ''}, {p['seconds']} seconds "
            f"({p['bed_hours']} bed-hours); model {h.escape(str(state['model'].get('name')))} version "
            f"{h.escape(str(state['model'].get('version')))}; reference: {h.escape(state['reference'])}</p>"
            f"<h2>Alerts</h2><ul>{alerts}</ul><h2>Signals</h2><table><tr><th>signal</th><th>PSI</th><th>missing</th>"
            f"<th>missing at training</th><th></th></tr>{rows}</table>"
            f"<h2>Alarm episodes per bed-hour</h2><p>{h.escape(rates)}</p>"
            f"<h2>Live recall of the bedside rules' events</h2><p>{rec['detected']} of {rec['events']}"
            f"{recall}"
            "</p></body></html>")


def log_to_mlflow(state: dict[str, Any], out: Path, uri: str, spec: Any) -> dict[str, str]:
    """A run in the experiment `biostream-monitoring` with the check's numbers and files, tagged with the serving
    model's name and version; that version's tag `monitoring_report` and model card point at the newest run."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("biostream-monitoring")
    metrics = {f"psi.{s}": v["psi"] for s, v in state["signals"].items() if v["psi"] is not None}
    metrics.update({f"missing.{s}": v["missing"] for s, v in state["signals"].items() if v["missing"] is not None})
    metrics.update({f"alarms_per_bed_hour.{c}": r for c, r in state["alarms_per_bed_hour"].items() if r is not None})
    if state["recall"]["recall"] is not None:
        metrics["live_recall"] = state["recall"]["recall"]
    metrics["alerts"] = len(state["alerts"])
    with mlflow.start_run(run_name=f"monitor-{spec.model_name}-v{spec.model_version}", tags={
            "stage": "monitor", "model_name": spec.model_name, "model_version": spec.model_version,
            "period_since": state["period"]["since"], "period_until": state["period"]["until"]}) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(out / "monitoring.json"), "monitoring")
        mlflow.log_artifact(str(out / "monitoring.html"), "monitoring")
    link = f"runs:/{run.info.run_id}/monitoring/monitoring.html"
    client = MlflowClient()
    client.set_model_version_tag(spec.model_name, spec.model_version, "monitoring_report", link)
    version = client.get_model_version(spec.model_name, spec.model_version)
    card = [line for line in (version.description or "").splitlines() if not line.startswith("Latest monitoring")]
    card.append(f"Latest monitoring report: {link} ({state['period']['since']} to {state['period']['until']}, "
                f"{len(state['alerts'])} alerts)")
    client.update_model_version(spec.model_name, spec.model_version, description="\n".join(card))
    return {"run_id": run.info.run_id, "report": link}
