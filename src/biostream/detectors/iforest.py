"""Isolation Forest (scikit-learn) on scaled window features.

Small batches (a served window) are scored with treelite's GTIL on the same forest: scikit-learn spends
~10-40 ms of per-call overhead on one row, GTIL ~0.1 ms, and its output is scikit-learn's
`-score_samples` to float rounding (a test holds them within 1e-6). Large batches stay with scikit-learn,
which is faster there."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from biostream.detectors.base import register
from biostream.detectors.tabular import DEFAULT_GROUPS, TabularDetector

GTIL_MAX_ROWS = 256  # batches up to this many rows go through treelite's GTIL


@register("iforest")
class IsolationForestDetector(TabularDetector):
    def __init__(self, n_estimators: int = 200, max_samples: int = 1024, max_features: float = 1.0,
                 feature_groups: tuple[str, ...] = DEFAULT_GROUPS, per_signal: bool = False, random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.feature_groups = feature_groups
        self.per_signal = per_signal
        self.random_state = random_state

    def _make_model(self, n_rows: int) -> IsolationForest:
        return IsolationForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, n_rows),
                               max_features=self.max_features, random_state=self.random_state, n_jobs=1)

    def _model_scores(self, k: int, X: np.ndarray) -> np.ndarray:
        if len(X) <= GTIL_MAX_ROWS:
            return self._gtil_scores(k, X)
        return -self.models_[k].score_samples(X)

    def _gtil_scores(self, k: int, X: np.ndarray) -> np.ndarray:
        """Forest k's anomaly score (= -score_samples) through treelite's GTIL."""
        import treelite

        forest = self._derived("gtil", k, treelite.sklearn.import_model)
        out = treelite.gtil.predict(forest, np.ascontiguousarray(X, dtype=np.float32), nthread=1)
        return np.asarray(out, dtype=np.float64).reshape(len(X))

    def _shap_values(self, k: int, X: np.ndarray) -> np.ndarray:
        """Exact tree SHAP of forest k's mean path length (shorter = more anomalous), negated so that
        positive contributions raise the anomaly score."""
        import shap

        explainer = self._derived("explainer", k, shap.TreeExplainer)
        return -np.asarray(explainer.shap_values(X, check_additivity=False))
