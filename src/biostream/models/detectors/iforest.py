"""Isolation Forest (scikit-learn) on scaled window features.

Fitted by scikit-learn; scored by `forest_kernel.FlatForest`, a compiled walk of the same trees that gives
scikit-learn's `-score_samples` to the bit without its per-call overhead (~10-40 ms for one served row) or
its per-tree copies of the rows (most of a study trial's time with a forest per signal).
The trees are built on every core: scikit-learn draws each tree's seed first, so they are the same trees."""

from __future__ import annotations

import copy

import numpy as np
from sklearn.ensemble import IsolationForest

from biostream.models.detectors.base import register
from biostream.models.detectors.forest_kernel import FlatForest
from biostream.models.detectors.tabular import DEFAULT_GROUPS, TabularDetector


@register("iforest")
class IsolationForestDetector(TabularDetector):
    explain_method = "exact tree SHAP of the isolation forest's path length (feature contributions, summed per signal)"

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
                               max_features=self.max_features, random_state=self.random_state,
                               n_jobs=-1)  # trees built in threads; the same trees as on one (seeds drawn first)

    def _model_scores(self, k: int, X: np.ndarray) -> np.ndarray:
        """Forest k's anomaly score, -score_samples."""
        return self._derived("flat", k, FlatForest.of).anomaly_scores(X)

    def _shap_values(self, k: int, X: np.ndarray) -> np.ndarray:
        """Exact tree SHAP of forest k's mean path length (shorter = more anomalous), negated so that
        positive contributions raise the anomaly score."""
        import shap

        explainer = self._derived("explainer", k, lambda model: shap.TreeExplainer(_shap_readable(model)))
        return -np.asarray(explainer.shap_values(X, check_additivity=False))


def _shap_readable(model: IsolationForest) -> IsolationForest:
    """The forest as SHAP 0.5x can read it: its `IsoTree` maps the tree's feature numbers through the tree's
    feature subset for leaves too (-2) and fails on a one-feature subset (a part of two features with
    `max_features` < 1). Repeating the lone feature leaves every split's feature the same (a shallow copy; the
    model is not changed)."""
    if all(len(f) > 1 for f in model.estimators_features_):
        return model
    out = copy.copy(model)
    out.estimators_features_ = [np.r_[f, f] if len(f) == 1 else f for f in model.estimators_features_]
    return out
