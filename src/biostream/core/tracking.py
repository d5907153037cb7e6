"""MLflow set-up for entry points: the embedded sqlite store and one experiment for the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biostream.core.config import require


@dataclass(frozen=True)
class TrackingParams:
    """`params.yaml: tracking`."""

    uri: str
    experiment: str
    artifact_root: Path

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TrackingParams:
        w = "params.yaml: tracking"
        sec = require(params, "tracking", "params.yaml")
        return cls(str(require(sec, "uri", w)), str(require(sec, "experiment", w)),
                   Path(require(sec, "artifact_root", w)))


def setup_tracking(p: TrackingParams) -> str:
    """Point MLflow at the store (creating local folders) and select the experiment; returns its id."""
    import mlflow

    if p.uri.startswith("sqlite:///"):
        Path(p.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(p.uri)
    exp = mlflow.get_experiment_by_name(p.experiment)
    if exp is None:
        p.artifact_root.mkdir(parents=True, exist_ok=True)
        exp_id = mlflow.create_experiment(p.experiment, artifact_location=p.artifact_root.resolve().as_uri())
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
