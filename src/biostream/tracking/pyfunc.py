"""The MLflow flavour of a `ModelBundle`: a pyfunc that takes raw windows, self-contained (it carries the
bundle, the `biostream` code, and the pinned requirements of everything that code imports).

Models logged before the package had subpackages pickled this class as `biostream.pyfunc.VitalsPyfunc`; that
name still imports (`biostream/pyfunc.py`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema, TensorSpec

from biostream.models.bundle import ModelBundle
from biostream.tracking.requirements import pyfunc_requirements

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the whole `biostream` package travels with the model


class VitalsPyfunc(mlflow.pyfunc.PythonModel):
    """Raw windows, a float64 tensor (n, signals, window_s) with NaN for missing values -> one row per
    window: score (0 at the threshold), alarm (score above it: a bedside rule of the floor held, or the model's
    own threshold), threshold, technical (1: the alarm is the measurement's, not the patient's)."""

    def load_context(self, context):  # noqa: ANN001 (MLflow inspects these signatures: no type hints)
        self.bundle = ModelBundle.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):  # noqa: ANN001
        return self.bundle.predict_frame(np.asarray(model_input, dtype=np.float64))


def signature(bundle: ModelBundle) -> ModelSignature:
    g = bundle.pipeline.geometry
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float64), (-1, len(bundle.pipeline.signals), g.window_s))]),
        outputs=Schema([ColSpec("double", "score"), ColSpec("long", "alarm"), ColSpec("double", "threshold"),
                        ColSpec("long", "technical")]),
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
            pip_requirements=pyfunc_requirements(),  # given: MLflow's own inference takes ~4 s
        )
    return info.model_uri
