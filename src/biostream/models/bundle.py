"""A self-contained model: raw windows in, scores and alarms out.

`ModelBundle` = the input pipeline (window geometry + preprocessor) + a fitted detector with its calibrated
threshold + the alarm policy. It is what `train` logs to MLflow (as a pyfunc: `biostream.tracking.pyfunc`), what
`evaluate` scores with, and what the BentoML service will load: one object, so training, evaluation and
serving cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biostream.core.io import atomic_dir
from biostream.features import InputPipeline, feature_names, feature_signal_weights
from biostream.models.detectors import BaseDetector, load_detector
from biostream.models.evaluation import AlarmPolicy


@dataclass(frozen=True)
class Explanation:
    """Why rows scored as they did: contributions per signal, and per feature for feature-reading models
    (SHAP values; they sum into the signal columns). Higher = towards anomalous."""

    signals: pd.DataFrame
    features: pd.DataFrame | None

    def top_signals(self, k: int = 3) -> list[list[str]]:
        """Per row, the k signals contributing most (positive contributions only), strongest first."""
        return top_signals(self.signals.to_numpy(), list(self.signals.columns), k)


def top_signals(contributions: np.ndarray, names: Sequence[str], k: int = 3) -> list[list[str]]:
    """Per row of (n, S) contributions, the names of the k largest positive ones, strongest first. A
    contribution within 1e-9 of the row's largest is rounding, not a contribution (occlusion rescores in
    another batch, whose last bits differ: a signal that changed nothing must not be named)."""
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    floor = 1e-9 * np.abs(contributions).max(axis=1, initial=0.0)
    return [[str(names[j]) for j in row if contributions[i, j] > floor[i]] for i, row in enumerate(order)]


@dataclass
class ModelBundle:
    pipeline: InputPipeline
    detector: BaseDetector
    policy: AlarmPolicy

    @property
    def threshold(self) -> float:
        return float(self.detector.threshold_)

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Anomaly scores of raw windows (n, signals, window_s), missing as NaN."""
        return self.detector.decision_function(self.pipeline.view(self.detector.input_view, windows))

    def explain(self, windows: np.ndarray) -> Explanation:
        """Contributions per signal (and per feature) of raw windows' scores."""
        return self.explain_view(self.pipeline.view(self.detector.input_view, windows))

    def explain_view(self, view: np.ndarray) -> Explanation:
        """`explain` of an input view already built (as stages build it from stored features)."""
        contrib = self.detector.explain(view)
        signals = list(self.pipeline.signals)
        if self.detector.explains == "features":
            features = pd.DataFrame(contrib, columns=feature_names(signals))
            return Explanation(pd.DataFrame(contrib @ feature_signal_weights(signals), columns=signals), features)
        return Explanation(pd.DataFrame(contrib, columns=signals), None)

    def predict_frame(self, windows: np.ndarray) -> pd.DataFrame:
        scores = self.score(windows)
        return pd.DataFrame({"score": scores, "alarm": (scores > self.threshold).astype(np.int64),
                             "threshold": np.full(len(scores), self.threshold)})

    def save(self, folder: str | Path) -> None:
        with atomic_dir(folder) as tmp:
            self.detector.save(tmp / "detector")
            (tmp / "input_pipeline.json").write_text(json.dumps(self.pipeline.to_dict()), encoding="utf-8")
            (tmp / "alarm_policy.json").write_text(json.dumps(self.policy.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        folder = Path(folder)
        for name in ("detector", "input_pipeline.json", "alarm_policy.json"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder}: missing {name}; is this a model bundle written by `train`?")
        return cls(
            InputPipeline.from_dict(json.loads((folder / "input_pipeline.json").read_text(encoding="utf-8"))),
            load_detector(folder / "detector"),
            AlarmPolicy(**json.loads((folder / "alarm_policy.json").read_text(encoding="utf-8"))),
        )
