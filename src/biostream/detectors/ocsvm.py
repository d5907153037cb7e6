"""A scalable One-Class SVM: a Nystroem approximation of the RBF kernel and a linear one-class SVM
trained by SGD (scikit-learn's recommended route for large data). Exact `OneClassSVM` is quadratic in
rows; `benchmarks/bench_ocsvm.py` compares the two on a subsample."""

from __future__ import annotations

import numpy as np
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.pipeline import Pipeline, make_pipeline

from biostream.detectors.base import register
from biostream.detectors.tabular import DEFAULT_GROUPS, TabularDetector


@register("ocsvm")
class OneClassSVMDetector(TabularDetector):
    def __init__(self, nu: float = 0.05, gamma: float = 0.01, n_components: int = 300, max_iter: int = 50,
                 feature_groups: tuple[str, ...] = DEFAULT_GROUPS, random_state: int = 0):
        self.nu = nu
        self.gamma = gamma
        self.n_components = n_components
        self.max_iter = max_iter
        self.feature_groups = feature_groups
        self.random_state = random_state

    def _make_model(self, n_rows: int) -> Pipeline:
        return make_pipeline(
            Nystroem(kernel="rbf", gamma=self.gamma, n_components=min(self.n_components, n_rows),
                     random_state=self.random_state),
            SGDOneClassSVM(nu=self.nu, max_iter=self.max_iter, tol=1e-4, random_state=self.random_state),
        )

    def _model_scores(self, X: np.ndarray) -> np.ndarray:
        return -self.model_.decision_function(X)
