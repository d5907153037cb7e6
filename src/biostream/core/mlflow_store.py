"""MLflow set-up for entry points: the store (`tracking.uri`: the embedded sqlite file by default, a database server,
or an MLflow tracking server) and one experiment for the pipeline."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from biostream.core.params import TrackingParams  # noqa: F401 (params.yaml: its section)

log = logging.getLogger("biostream")


def check_server(uri: str, timeout_s: float = 10.0) -> None:
    """Fail at once, naming the fix, when an MLflow server does not answer (MLflow's client would retry for
    minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
            if resp.status == 200:
                return
            problem = f"/health answered {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = str(getattr(exc, "reason", exc))
    raise ConnectionError(f"the MLflow server of tracking.uri ({uri}) does not answer ({problem}): start it "
                          "(docs/scaling-out.md) or set params.yaml: tracking.uri to the embedded "
                          "sqlite:///stores/mlflow.db")


def setup_tracking(p: TrackingParams) -> str:
    """Point MLflow at the store (creating local folders) and select the experiment; returns its id."""
    import mlflow

    if p.uri.startswith("sqlite:///"):
        store = Path(p.uri.removeprefix("sqlite:///"))
        store.parent.mkdir(parents=True, exist_ok=True)
        if not store.is_absolute() and f"{os.sep}.dvc{os.sep}tmp{os.sep}exps{os.sep}" in str(Path.cwd()):
            log.warning("tracking.uri %s is inside this queued experiment's temporary workspace (%s), which DVC "
                        "deletes when the experiment ends: its runs and registry decisions go with it. Queue "
                        "experiments against a shared store (docs/scaling-out.md)", p.uri, Path.cwd())
    if p.server:
        check_server(p.uri)
    mlflow.set_tracking_uri(p.uri)
    exp = mlflow.get_experiment_by_name(p.experiment)
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:
            exp_id = mlflow.create_experiment(p.experiment, artifact_location=p.artifact_location())
        except MlflowException as exc:  # another process (a parallel experiment, a worker) created it first
            exp = mlflow.get_experiment_by_name(p.experiment)
            if exp is None:
                raise ConnectionError(f"cannot create the MLflow experiment '{p.experiment}' in {p.uri}: "
                                      f"{exc}") from exc
            exp_id = exp.experiment_id
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
