"""A scalable One-Class SVM: a Nystroem approximation of the RBF kernel and a linear one-class SVM
trained by SGD (scikit-learn's recommended route for large data). Exact `OneClassSVM` is quadratic in
rows; `benchmarks/bench_ocsvm.py` compares the two on a subsample.

Scores are computed in numpy from the fitted pipeline's own arrays (`_fast_scores`), in float64 and in one code path
for every batch size: training, evaluation and a served window get the same numbers. Explanations: SHAP's
KernelExplainer against a k-means summary of the training rows (kept with the model), the practical choice for a
kernel model (../shared/STACK.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import SGDOneClassSVM
from sklearn.pipeline import Pipeline, make_pipeline

from biostream.models.detectors.base import register
from biostream.models.detectors.tabular import DEFAULT_GROUPS, TabularDetector

BACKGROUND_CENTRES = 10  # k-means summary of the training rows that SHAP integrates features out against
SHAP_SAMPLES = 400  # coalitions evaluated per explained row
CHUNK_ROWS = 4096  # rows scored at once (the kernel matrix is rows x components, float64)


@register("ocsvm")
class OneClassSVMDetector(TabularDetector):
    explain_method = ("kernel SHAP against a k-means background of training windows (feature contributions, summed "
                      "per signal)")
    top_signals_method = "occlusion"  # its kernel SHAP takes ~60 ms a window: too slow for every served alarm

    def __init__(self, nu: float = 0.05, gamma: float = 0.01, n_components: int = 300, max_iter: int = 50,
                 feature_groups: tuple[str, ...] = DEFAULT_GROUPS, per_signal: bool = False, random_state: int = 0):
        self.nu = nu
        self.gamma = gamma
        self.n_components = n_components
        self.max_iter = max_iter
        self.feature_groups = feature_groups
        self.per_signal = per_signal
        self.random_state = random_state

    def _make_model(self, n_rows: int) -> Pipeline:
        return make_pipeline(
            Nystroem(kernel="rbf", gamma=self.gamma, n_components=min(self.n_components, n_rows),
                     random_state=self.random_state),
            SGDOneClassSVM(nu=self.nu, max_iter=self.max_iter, tol=1e-4, random_state=self.random_state),
        )

    def _model_scores(self, k: int, X: np.ndarray) -> np.ndarray:
        return np.concatenate([self._fast_scores(k, X[i : i + CHUNK_ROWS]) for i in range(0, len(X), CHUNK_ROWS)]
                              or [np.empty(0)])

    def _fast_scores(self, k: int, X: np.ndarray) -> np.ndarray:
        """-decision_function of pipeline k (Nystroem + SGDOneClassSVM), in float64 numpy: the same RBF kernel
        against the Nystroem components, the normalisation and the SVM's weights folded into one vector,
        offset - exp(-gamma |x - c|^2) @ (normalization^T @ coef). Without scikit-learn's per-call checks, and
        float64 because its float32 kernel is ~1e-8 off these scores (a test holds them within 1e-7): enough to
        matter once a per-signal part's scores, whose spread can be ~1e-4, are put on the common scale
        (`biostream.models.detectors.tabular`)."""
        centres, centre_sq, weights, gamma, offset = self._derived("kernel", k, _folded)
        x = np.asarray(X, dtype=np.float64)
        sq_dist = (x * x).sum(axis=1)[:, None] - 2.0 * (x @ centres.T) + centre_sq[None, :]
        np.maximum(sq_dist, 0.0, out=sq_dist)  # rounding can take a zero distance below 0
        return offset - np.exp(-gamma * sq_dist) @ weights

    def _fit(self, X: np.ndarray, **kwargs: Any) -> np.ndarray | None:
        scores = super()._fit(X, **kwargs)
        # keep a seeded sample of training rows (every column: each part explains with its own); its k-means
        # summary (seconds of work) is made only when the model is explained or saved, not in every trial
        rng = np.random.default_rng(self.random_state)
        self._background_rows = X[rng.choice(len(X), size=min(len(X), 20000), replace=False)]
        for stale in ("background_", "background_weights_"):
            self.__dict__.pop(stale, None)
        return scores

    def _summarise_background(self) -> None:
        if not hasattr(self, "background_"):
            import shap

            sample = self._background_rows
            summary = shap.kmeans(sample, min(BACKGROUND_CENTRES, len(sample)))  # seeded inside shap
            self.background_ = np.asarray(summary.data, dtype=np.float64)
            self.background_weights_ = np.asarray(summary.weights, dtype=np.float64)

    def _shap_values(self, k: int, X: np.ndarray) -> np.ndarray:
        def explainer(model: Any) -> Any:
            self._summarise_background()
            import shap
            from shap.utils._legacy import DenseData

            cols = self.parts_[k]
            background = DenseData(self.background_[:, cols], [str(i) for i in cols], None, self.background_weights_)
            return shap.KernelExplainer(lambda x: self._model_scores(k, x), background)

        kernel_shap = self._derived("explainer", k, explainer)
        state = np.random.get_state()  # KernelExplainer samples coalitions from numpy's global generator
        np.random.seed(self.random_state)
        try:
            values = kernel_shap.shap_values(X, nsamples=SHAP_SAMPLES, silent=True, l1_reg=False)
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
        if (folder / "model.skops").is_file():  # saved before per-signal parts: background of its columns only
            cols = self.parts_[0]
            full = np.zeros((len(self.background_), int(cols.max()) + 1))
            full[:, cols] = self.background_
            self.background_ = full


def _folded(model: Pipeline) -> tuple:
    """A fitted Nystroem + SGDOneClassSVM pipeline as (components, their squared norms, the SVM's weights folded
    through the normalisation, gamma, offset), float64."""
    nystroem, svm = model.steps[0][1], model.steps[1][1]
    centres = np.asarray(nystroem.components_, dtype=np.float64)
    normalization = np.asarray(nystroem.normalization_, dtype=np.float64)
    weights = normalization.T @ np.asarray(svm.coef_, dtype=np.float64).ravel()
    return centres, (centres * centres).sum(axis=1), weights, float(nystroem.gamma), float(svm.offset_[0])
