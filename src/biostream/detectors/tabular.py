"""Shared base of detectors that read scaled window features through a scikit-learn model."""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from biostream.detectors import _skops
from biostream.detectors.base import BaseDetector
from biostream.features import group_columns

DEFAULT_GROUPS = ("level", "spread", "trend", "relative", "freshness", "context", "cross")


class TabularDetector(BaseDetector):
    """Selects its `feature_groups` (a hyperparameter each subclass takes), fits `_make_model(n_rows)`,
    scores with `_model_scores`, explains with `_shap_values` (SHAP, in score units: positive = towards
    anomalous; columns it does not read get 0), and saves the model with skops (no pickle)."""

    input_view = "features"
    explains = "features"
    feature_groups: tuple[str, ...]

    @abstractmethod
    def _make_model(self, n_rows: int) -> Any: ...

    @abstractmethod
    def _model_scores(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _shap_values(self, X: np.ndarray) -> np.ndarray: ...

    def _fit(self, X: np.ndarray, **kwargs: Any) -> None:
        self.columns_ = group_columns(X.shape[1], tuple(self.feature_groups))
        self.model_ = self._make_model(len(X)).fit(X[:, self.columns_])

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._model_scores(X[:, self.columns_])

    def _explain(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros(X.shape, dtype=np.float64)
        out[:, self.columns_] = self._shap_values(X[:, self.columns_])
        return out

    def _save_state(self, folder: Path) -> None:
        _skops.dump(self.model_, folder / "model.skops")
        (folder / "columns.json").write_text(json.dumps(self.columns_.tolist()))

    def _load_state(self, folder: Path) -> None:
        self.model_ = _skops.load(folder / "model.skops")
        self.columns_ = np.asarray(json.loads((folder / "columns.json").read_text()), dtype=np.intp)
