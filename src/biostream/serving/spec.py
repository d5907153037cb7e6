"""What the service knows besides the model bundle.

`ServeParams` is `params.yaml: serve`; `ServingSpec` is everything else the service answers with (registered
model name/version/alias, signal units and physiological ranges from `configs/signals.yaml`, limits,
metrics). The `package` stage stores the spec as the BentoML model's metadata, so a bento carries it and needs
neither `params.yaml` nor `configs/` to run. `bundle_dir` finds the bundle inside a logged BioStream model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from biostream.core.config import ConfigError, SignalCatalog
from biostream.core.params import ServeParams  # noqa: F401 (params.yaml: its section)
from biostream.models.advisor import Advisor
from biostream.models.bundle import ModelBundle
from biostream.serving.streaming.params import StreamParams

BENTO_MODEL = "vitals-anomaly-detector"  # the champion's name in the BentoML model store (`package` imports it)
MLFLOW_MODEL_DIR = "mlflow_model"  # where bentoml.mlflow.import_model puts the MLflow model
SPEC_KEY = "serving_spec"  # the BentoML model's metadata key holding the ServingSpec (JSON)


@dataclass(frozen=True)
class ServingSpec:
    """What the service knows besides the bundle; JSON-able (the BentoML model's metadata)."""

    model_name: str
    model_version: str
    model_alias: str
    model_uri: str
    detector: str
    signals: tuple[str, ...]
    units: dict[str, str]
    valid: dict[str, tuple[float, float]]
    window_s: int  # seconds of history the model reads (what a window must carry at least)
    max_window_s: int
    max_batch_windows: int
    max_series_s: int
    max_missing_fraction: float
    max_latency_ms: int
    top_signals: int
    workers: int
    max_concurrency: int  # requests one worker serves at once (429 beyond)
    worker_memory_mb: int  # a worker's memory cap (biostream.serving.memory)
    metrics: dict[str, float] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)  # params.yaml: stream, for POST /ingest
    max_body_bytes: int | None = None  # serve.max_body_mb: JSON bodies longer are refused unread (413)
    advisory: dict[str, Any] = field(default_factory=dict)  # `Advisor.to_dict()` of the served advisory; {}: none

    @classmethod
    def build(cls, bundle: ModelBundle, catalog: SignalCatalog, serve: ServeParams, *, model_name: str,
              model_version: str, model_alias: str, model_uri: str, metrics: Mapping[str, float],
              stream: StreamParams | None, advisor: Advisor | None = None) -> ServingSpec:
        """The spec of a bundle served with `serve`; `stream`: params.yaml's stream settings (None: a service
        without POST /ingest settings, for tests of the scoring endpoints); `advisor`: the advisory served (None:
        none)."""
        signals = tuple(bundle.pipeline.signals)
        window_s = bundle.window_s
        if serve.max_window_s < window_s:
            raise ConfigError(f"params.yaml: serve.max_window_s ({serve.max_window_s}) is shorter than the "
                              f"{window_s} s the {bundle.detector.name} model reads; raise it to at least {window_s}")
        if advisor is not None and advisor.reads_s > window_s:
            raise ConfigError(f"configs/advisories.yaml: the served advisory {advisor.name} reads {advisor.reads_s} s "
                              f"of history, more than the {window_s} s a bed's stream keeps (the model's window); "
                              "shorten it, or choose another advisory")
        return cls(model_name, str(model_version), model_alias, model_uri, bundle.detector.name, signals,
                   {s: catalog[s].unit for s in signals}, {s: tuple(catalog[s].valid) for s in signals}, window_s,
                   serve.max_window_s, serve.max_batch_windows, serve.max_series_s, serve.max_missing_fraction,
                   serve.max_latency_ms, serve.top_signals, serve.workers, serve.max_concurrency,
                   serve.worker_memory_mb, dict(metrics),
                   stream.to_dict() if stream is not None else {},
                   int(serve.max_body_mb * (1 << 20)), advisor.to_dict() if advisor is not None else {})

    @cached_property
    def advisor(self) -> Advisor | None:
        return Advisor.from_dict(self.advisory) if self.advisory else None

    @cached_property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(S, 1) lower and upper physiological limits, in signal order."""
        limits = np.array([self.valid[s] for s in self.signals])
        return limits[:, :1], limits[:, 1:]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["signals"] = list(self.signals)
        d["valid"] = {k: list(v) for k, v in self.valid.items()}
        return d

    @classmethod
    def of_model(cls, info_metadata: Mapping[str, Any]) -> ServingSpec:
        """The spec the `package` stage stored in a BentoML model's metadata (`model.info.metadata`)."""
        return cls.from_dict(json.loads(info_metadata[SPEC_KEY]))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServingSpec:
        d = dict(d)
        d["signals"] = tuple(d["signals"])
        d["valid"] = {k: (float(v[0]), float(v[1])) for k, v in d["valid"].items()}
        return cls(**d)


def bundle_dir(mlflow_model: str | Path) -> Path:
    """The `ModelBundle` folder inside a logged BioStream pyfunc model (its `bundle` artifact, per MLmodel)."""
    mlflow_model = Path(mlflow_model)
    mlmodel = mlflow_model / "MLmodel"
    if not mlmodel.is_file():
        raise FileNotFoundError(f"{mlflow_model}: no MLmodel file; is this an MLflow model?")
    flavor = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")).get("flavors") or {}).get("python_function", {})
    rel = ((flavor.get("artifacts") or {}).get("bundle") or {}).get("path")
    if not rel:
        raise FileNotFoundError(f"{mlmodel}: no `bundle` artifact; not a BioStream model (biostream.tracking.pyfunc)")
    return mlflow_model / rel
