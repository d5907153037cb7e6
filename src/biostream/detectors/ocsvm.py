"""A scalable One-Class SVM: a Nystroem approximation of the RBF kernel and a linear one-class SVM
trained by SGD (scikit-learn's recommended route for large data). Exact `OneClassSVM` is quadratic in
rows; `benchmarks/bench_ocsvm.py` compares the two on a subsample.

Small batches (served windows) are scored in numpy from the fitted pipeline's own arrays: the same RBF kernel
against the Nystroem components, with the normalisation and the linear SVM's weights folded into one vector.
scikit-learn spends ~0.5 ms of per-call checks on one row, this ~0.03 ms, and the scores are scikit-learn's
to float rounding (scikit-learn keeps the kernel in float32; a test holds them within 1e-7). Large batches
stay with scikit-learn.

Explanations: SHAP's KernelExplainer against a k-means summary of the training rows (kept with the model),
the practical choice for a kernel model (../shared/STACK.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.pipeline import Pipeline, make_pipeline

from biostream.detectors.base import register
from biostream.detectors.tabular import DEFAULT_GROUPS, TabularDetector

BACKGROUND_CENTRES = 10  # k-means summary of the training rows that SHAP integrates features out against
SHAP_SAMPLES = 400  # coalitions evaluated per explained row
FAST_MAX_ROWS = 256  # batches up to this many rows are scored in numpy (`_fast_scores`)


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
        if len(X) <= FAST_MAX_ROWS:
            return self._fast_scores(X)
        return -self.model_.decision_function(X)

    def _fast_scores(self, X: np.ndarray) -> np.ndarray:
        """-decision_function of the Nystroem + SGDOneClassSVM pipeline, in float64 numpy:
        offset - exp(-gamma |x - c|^2) @ (normalization^T @ coef)."""
        if getattr(self, "_fast", None) is None or self._fast[0] is not self.model_:
            nystroem, svm = self.model_.steps[0][1], self.model_.steps[1][1]
            centres = np.asarray(nystroem.components_, dtype=np.float64)
            normalization = np.asarray(nystroem.normalization_, dtype=np.float64)
            weights = normalization.T @ np.asarray(svm.coef_, dtype=np.float64).ravel()
            self._fast = (self.model_, centres, (centres * centres).sum(axis=1), weights,
                          float(nystroem.gamma), float(svm.offset_[0]))
        _, centres, centre_sq, weights, gamma, offset = self._fast
        x = np.asarray(X, dtype=np.float64)
        sq_dist = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ centres.T) + centre_sq[None, :]
        np.maximum(sq_dist, 0.0, out=sq_dist)  # rounding can take a zero distance below 0
        return offset - np.exp(-gamma * sq_dist) @ weights

    def __getstate__(self) -> dict:  # derived arrays are rebuilt from the model, never pickled
        state = dict(self.__dict__)
        state.pop("_fast", None)
        state.pop("_explainer", None)
        return state

    def _fit(self, X: np.ndarray, **kwargs: Any) -> None:
        super()._fit(X, **kwargs)
        # keep a seeded sample of training rows; its k-means summary (seconds of work) is made only when the
        # model is explained or saved, not in every tuning trial
        rows = X[:, self.columns_]
        rng = np.random.default_rng(self.random_state)
        self._background_rows = rows[rng.choice(len(rows), size=min(len(rows), 20000), replace=False)]
        for stale in ("background_", "background_weights_", "_explainer"):
            self.__dict__.pop(stale, None)

    def _summarise_background(self) -> None:
        if not hasattr(self, "background_"):
            import shap

            sample = self._background_rows
            summary = shap.kmeans(sample, min(BACKGROUND_CENTRES, len(sample)))  # seeded inside shap
            self.background_ = np.asarray(summary.data, dtype=np.float64)
            self.background_weights_ = np.asarray(summary.weights, dtype=np.float64)

    def _shap_values(self, X: np.ndarray) -> np.ndarray:
        if getattr(self, "_explainer", None) is None:
            self._summarise_background()
            import shap
            from shap.utils._legacy import DenseData

            background = DenseData(self.background_, [str(i) for i in range(self.background_.shape[1])],
                                   None, self.background_weights_)
            self._explainer = shap.KernelExplainer(self._model_scores, background)
        state = np.random.get_state()  # KernelExplainer samples coalitions from numpy's global generator
        np.random.seed(self.random_state)
        try:
            values = self._explainer.shap_values(X, nsamples=SHAP_SAMPLES, silent=True, l1_reg=False)
        finally:
            np.random.set_state(state)
        return np.asarray(values)

    def _save_state(self, folder: Path) -> None:
        super()._save_state(folder)
        self._summarise_background()
        np.savez(folder / "shap_background.npz", data=self.background_, weights=self.background_weights_)

    def _load_state(self, folder: Path) -> None:
        super()._load_state(folder)
        with np.load(folder / "shap_background.npz") as z:
            self.background_, self.background_weights_ = z["data"], z["weights"]
