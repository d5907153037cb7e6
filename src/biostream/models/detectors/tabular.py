"""Shared base of detectors that read scaled window features through scikit-learn models.

With `per_signal=True` a detector fits one model per signal (that signal's features of the chosen groups;
the cross-signal features form one more part) and scores a row by the highest of the parts' scores, each
put on a common scale first: (score - training median) / (training `PART_QUANTILE` - training median), so
1 is the score a part gives its 1 % most unusual training rows. One model over all ~140 features dilutes an
anomaly of one signal (a frozen heart rate, a noisy arterial line) among everything else that varies; a
model per signal does not (docs/results.md)."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from biostream.features.compute import CROSS, PER_SIGNAL, group_columns
from biostream.models.detectors import _skops
from biostream.models.detectors.base import BaseDetector

# the patient's own changes; absolute levels (`level`, `cross`) are the bedside rules' (configs/search_spaces)
DEFAULT_GROUPS = ("spread", "trend", "relative", "freshness", "context")
PART_QUANTILE = 0.99  # per-signal models: the training score quantile that maps to 1
PER_SIGNAL_EXPLAIN = "; one model per signal: the contributions of the signal's model that gave the score"


class TabularDetector(BaseDetector):
    """Selects its `feature_groups` and, with `per_signal`, splits them by signal (hyperparameters each
    subclass takes); fits `_make_model(n_rows)` per part, scores with `_model_scores(k, X)` (part k's model on
    its columns), explains with `_shap_values(k, X)` (SHAP, in score units: positive = towards anomalous;
    columns a part does not read get 0; per signal, the part that gave a row its score explains it), and
    saves the models with skops (no pickle)."""

    input_view = "features"
    explains = "features"
    feature_groups: tuple[str, ...]
    per_signal: bool

    def describe_explanation(self) -> str:
        return self.explain_method + (PER_SIGNAL_EXPLAIN if self.per_signal else "")

    @abstractmethod
    def _make_model(self, n_rows: int) -> Any: ...

    @abstractmethod
    def _model_scores(self, k: int, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _shap_values(self, k: int, X: np.ndarray) -> np.ndarray: ...

    def _derived(self, kind: str, k: int, build: Callable[[Any], Any]) -> Any:
        """What `build` derives from part k's model (a fast scorer, an explainer): built on first use, rebuilt
        when the model is refitted, never pickled (`__getstate__`)."""
        cache = self.__dict__.setdefault("_derived_cache", {})
        model = self.models_[k]
        if (kind, k) not in cache or cache[kind, k][0] is not model:
            cache[kind, k] = (model, build(model))
        return cache[kind, k][1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_derived_cache", None)
        return state

    def _parts(self, n_features: int) -> list[np.ndarray]:
        cols = group_columns(n_features, tuple(self.feature_groups))
        if not self.per_signal:
            return [cols]
        n_signals = (n_features - len(CROSS)) // len(PER_SIGNAL)
        owner = np.minimum(cols // len(PER_SIGNAL), n_signals)  # the cross-signal features are one more part
        return [cols[owner == k] for k in np.unique(owner)]

    def _fit(self, X: np.ndarray, **kwargs: Any) -> np.ndarray | None:
        self.parts_ = self._parts(X.shape[1])
        X64 = np.asarray(X, dtype=np.float64)  # kernel approximations are ill-conditioned in float32
        self.models_ = [self._make_model(len(X)).fit(X64[:, cols]) for cols in self.parts_]
        self.norms_ = np.array([[0.0, 1.0]])  # one model: its own scores
        if len(self.parts_) == 1:
            return None
        raw = self._raw_part_scores(X)
        median = np.median(raw, axis=0)
        self.norms_ = np.stack([median, np.maximum(np.quantile(raw, PART_QUANTILE, axis=0) - median, 1e-12)], axis=1)
        return self._common_scale(raw).max(axis=1)  # as _score, without scoring the rows again

    def _raw_part_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, parts) scores of each part's model, as it gives them."""
        return np.stack([self._model_scores(k, X[:, cols]) for k, cols in enumerate(self.parts_)], axis=1)

    def _common_scale(self, raw: np.ndarray) -> np.ndarray:
        return (raw - self.norms_[:, 0]) / self.norms_[:, 1]

    def _part_scores(self, X: np.ndarray) -> np.ndarray:
        """(n, parts) scores, each on the common scale."""
        return self._common_scale(self._raw_part_scores(X))

    def _score(self, X: np.ndarray) -> np.ndarray:
        return self._part_scores(X).max(axis=1)

    def _explain(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros(X.shape, dtype=np.float64)
        best = self._part_scores(X).argmax(axis=1) if len(self.parts_) > 1 else np.zeros(len(X), dtype=np.intp)
        for k in np.unique(best):
            rows, cols = np.flatnonzero(best == k), self.parts_[k]
            out[np.ix_(rows, cols)] = self._shap_values(int(k), X[np.ix_(rows, cols)]) / self.norms_[k, 1]
        return out

    def _save_state(self, folder: Path) -> None:
        for k, model in enumerate(self.models_):
            _skops.dump(model, folder / f"model_{k}.skops")
        (folder / "parts.json").write_text(json.dumps({"columns": [c.tolist() for c in self.parts_],
                                                       "norms": self.norms_.tolist()}))

    def _load_state(self, folder: Path) -> None:
        if (folder / "model.skops").is_file():  # saved before per-signal parts: one model
            self.models_ = [_skops.load(folder / "model.skops")]
            self.parts_ = [np.asarray(json.loads((folder / "columns.json").read_text()), dtype=np.intp)]
            self.norms_ = np.array([[0.0, 1.0]])
            return
        parts = json.loads((folder / "parts.json").read_text())
        self.parts_ = [np.asarray(c, dtype=np.intp) for c in parts["columns"]]
        self.norms_ = np.asarray(parts["norms"], dtype=np.float64)
        self.models_ = [_skops.load(folder / f"model_{k}.skops") for k in range(len(self.parts_))]
