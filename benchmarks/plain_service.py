"""A plain BentoML wrapper of the same champion, for `bench_service`'s comparison: the imported MLflow model
loaded with `bentoml.mlflow.load_model` and its own `predict` called on a float tensor (n, signals,
featurize.window_s), no input checks, no fast paths, no batching.

    BENTOML_HOME=bentoml_home bentoml serve benchmarks.plain_service:PlainService
"""

from __future__ import annotations

import bentoml
import numpy as np

from biostream.serving import BENTO_MODEL, ServingSpec

MODEL = bentoml.models.BentoModel(f"{BENTO_MODEL}:latest")


@bentoml.service(name="biostream-plain", workers=ServingSpec.of_model(MODEL.stored.info.metadata).workers)
class PlainService:  # as many workers as the service (serve.workers)
    model = MODEL

    def __init__(self) -> None:
        self.pyfunc = bentoml.mlflow.load_model(self.model)

    @bentoml.api
    def predict(self, windows: np.ndarray) -> list[float]:
        return self.pyfunc.predict(np.asarray(windows, dtype=np.float64))["score"].tolist()
