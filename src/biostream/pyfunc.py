"""The MLflow flavour of a `ModelBundle`: a pyfunc that takes raw windows, self-contained (it carries the
bundle and the `biostream` code)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from biostream.bundle import ModelBundle

PACKAGE_DIR = Path(__file__).resolve().parent
# what the logged model needs to run; passing them skips MLflow's slow requirement inference
REQUIREMENTS = [
    "numpy==2.4.6", "pandas==3.1.1", "scikit-learn==1.9.1", "scipy==1.17.1", "skops==0.16.0",
    "tensorflow-cpu==2.21.0", "keras==3.15.1", "pyyaml==6.0.3", "mlflow==3.17.2",
]


class VitalsPyfunc(mlflow.pyfunc.PythonModel):
    """Raw windows, a float64 tensor (n, signals, window_s) with NaN for missing values -> one row per
    window: score, alarm (score above the calibrated threshold), threshold."""

    def load_context(self, context):  # noqa: ANN001 (MLflow inspects these signatures: no type hints)
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        return self.bundle.predict_frame(np.asarray(model_input, dtype=np.float64))


def signature(bundle: ModelBundle) -> ModelSignature:
    g = bundle.pipeline.geometry
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, len(bundle.pipeline.signals), g.window_s))]),
        outputs=Schema([ColSpec("double", "score"), ColSpec("long", "alarm"), ColSpec("double", "threshold")]),
    )


def log_bundle(bundle_dir: Path, name: str, example: np.ndarray) -> str:
    """Log a saved bundle as a pyfunc in the active MLflow run; returns the model URI."""
    bundle = ModelBundle.load(bundle_dir)
    with warnings.catch_warnings():  # it asks for type hints, which its tensor signatures cannot use
        warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=VitalsPyfunc(),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(PACKAGE_DIR)],
            signature=signature(bundle),
            input_example=example,
            pip_requirements=REQUIREMENTS,
        )
    return info.model_uri
