"""Isolation Forest (scikit-learn) on scaled window features."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from biostream.detectors.base import register
from biostream.detectors.tabular import DEFAULT_GROUPS, TabularDetector


@register("iforest")
class IsolationForestDetector(TabularDetector):
    def __init__(self, n_estimators: int = 200, max_samples: int = 1024, max_features: float = 1.0,
                 feature_groups: tuple[str, ...] = DEFAULT_GROUPS, random_state: int = 0):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.feature_groups = feature_groups
        self.random_state = random_state

    def _make_model(self, n_rows: int) -> IsolationForest:
        return IsolationForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, n_rows),
                               max_features=self.max_features, random_state=self.random_state, n_jobs=1)

    def _model_scores(self, X: np.ndarray) -> np.ndarray:
        return -self.model_.score_samples(X)

    def _shap_values(self, X: np.ndarray) -> np.ndarray:
        """Exact tree SHAP of the forest's mean path length (shorter = more anomalous), negated so that
        positive contributions raise the anomaly score."""
        if getattr(self, "_explainer", None) is None:
            import shap

            self._explainer = shap.TreeExplainer(self.model_)
        return -np.asarray(self._explainer.shap_values(X, check_additivity=False))
