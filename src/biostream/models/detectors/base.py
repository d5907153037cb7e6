"""The detector contract every model follows (after PyOD's BaseDetector), and the name -> class registry.

The contract is `BaseDetector`'s. A detector is made by name (`make_detector`; its module imported on first use)
and declares the input view it reads (`input_view`): stages build that view and never branch on a detector's name.
"""

from __future__ import annotations

import importlib
import inspect
import json
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from biostream.core.io import atomic_dir
from biostream.features.readiness import learned_defined

# name -> the module that registers it (imported on first use)
MODULES = {
    "clinical": "biostream.models.detectors.clinical",
    "iforest": "biostream.models.detectors.iforest",
    "lstm_ae": "biostream.models.detectors.lstm_ae",
    "ocsvm": "biostream.models.detectors.ocsvm",
}
NAMES = tuple(sorted(MODULES))
REGISTRY: dict[str, type[BaseDetector]] = {}  # filled as modules are imported
VIEWS = ("features", "sequence", "window")
PROVISIONAL_QUANTILE = 0.99


def register(name: str):
    def wrap(cls: type[BaseDetector]) -> type[BaseDetector]:
        if name in REGISTRY:
            raise ValueError(f"detector name '{name}' is registered twice")
        if cls.input_view not in VIEWS:
            raise ValueError(f"{cls.__name__}.input_view must be one of {VIEWS}")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def detector_class(name: str) -> type[BaseDetector]:
    """The class registered under `name`, importing its module on first use."""
    if name not in MODULES:
        raise KeyError(f"unknown detector '{name}'; registered: {', '.join(NAMES)}")
    if name not in REGISTRY:
        importlib.import_module(MODULES[name])
    return REGISTRY[name]


def make_detector(name: str, **params: Any) -> BaseDetector:
    """A detector by registry name with the given hyperparameters."""
    return detector_class(name)(**params)


def restore_params(cls: type[BaseDetector], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON stored them, back to the constructor's types (JSON has no tuples: a list becomes
    a tuple where the constructor's default is one)."""
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    return {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v
            for k, v in stored.items()}


class NotFittedError(RuntimeError):
    pass


class BaseDetector(BaseEstimator):
    """The contract:

    * hyperparameters only in `__init__` (so `get_params` / `set_params` from scikit-learn work);
    * `fit(X)` learns from training inputs; fitted state ends in `_`;
    * `decision_function(X)`: one finite score per row, higher = more anomalous;
    * `threshold_`: provisional after `fit` (the 99th percentile of training scores), then set by a separate
      calibration step (`biostream.models.calibration`) without retraining;
    * `predict(X)`: 1 where the score exceeds `threshold_`, else 0;
    * `save(folder)` / `load_detector(folder)`: identical scores after a round trip.

    `input_view` says what X is: "features" (scaled window features, (n, F)), "sequence" (scaled sequence view and
    its mask, (n, T, 2S)) or "window" (raw windows, (n, S, W)). `explain(X)` says why: one contribution per feature
    column (`explains = "features"`: SHAP values for the tabular models) or per signal (`explains = "signals"`:
    per-signal reconstruction error, rule exceedance), higher = pushes the score towards anomalous;
    `biostream.models.bundle.ModelBundle.explain` names them and sums feature contributions per signal, for the
    evaluation plots and the serving `explain`.
    """

    name: ClassVar[str] = ""
    input_view: ClassVar[str] = "features"
    # False for detectors whose threshold is part of their definition (the clinical rules)
    calibrated: ClassVar[bool] = True
    # what `explain` attributes a score to: "features" (columns of the features view) or "signals"
    explains: ClassVar[str] = "features"
    # what `explain` returns, in words (the service's metadata and explain answers)
    explain_method: ClassVar[str] = ""
    # how a served alarm names its signals when not by `explain` (None: by `explain`; "occlusion": by
    # `biostream.models.answer.occlusion_contributions`, for a model whose own explanation is too slow to serve)
    top_signals_method: ClassVar[str | None] = None
    # True: hyperparameters come from its Optuna study (`tune@<name>`); False: from the configs
    tunable: ClassVar[bool] = True

    @classmethod
    def training_params(cls, tuned: Mapping[str, Any] | None, configs: Any) -> dict[str, Any]:
        """The hyperparameters `train` fits with: the study's best (`tuned`, as results/tune/<name>.json stores
        them) for a tunable detector; a detector defined by the configs (`biostream.core.config.Configs`)
        overrides this."""
        if tuned is None:
            raise FileNotFoundError(f"{cls.name} has no tuned params: run `dvc repro tune@{cls.name}` first")
        return restore_params(cls, tuned)

    def describe_explanation(self) -> str:
        """`explain_method`, with what this fitted instance adds (e.g. one model per signal)."""
        return self.explain_method

    @property
    def reads_last_s(self) -> int | None:
        """Of the window view, the last seconds the scores depend on (None: all of it). `score_rows` builds
        only those: the same scores from a fraction of the work."""
        return None

    # --- to implement -----------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, X: np.ndarray, **kwargs: Any) -> np.ndarray | None:
        """Fit; may return the training rows' scores when fitting computed them anyway (`fit` then does not
        score the rows again)."""

    @abstractmethod
    def _score(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _explain(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _save_state(self, folder: Path) -> None: ...

    @abstractmethod
    def _load_state(self, folder: Path) -> None: ...

    # --- the contract -----------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> BaseDetector:
        """Learn from training inputs (labels are not used: detectors are unsupervised). Detectors that
        train in epochs accept `epoch_callback(epoch, logs)`; others ignore it."""
        X = self._check_input(X)
        if len(X) == 0:
            raise ValueError(f"{self.name}: cannot fit on zero rows")
        scores = self._fit(X, **kwargs)
        self.train_scores_ = self._finite_scores(X) if scores is None else self._checked(scores)
        self.threshold_ = float(np.quantile(self.train_scores_, PROVISIONAL_QUANTILE))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score per row, higher = more anomalous; always finite."""
        self._check_fitted()
        X = self._check_input(X)
        if len(X) == 0:
            return np.empty(0, dtype=np.float64)
        return self._finite_scores(X)

    def _finite_scores(self, X: np.ndarray) -> np.ndarray:
        return self._checked(self._score(X))

    def _checked(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, dtype=np.float64)
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"{self.name}: non-finite scores; inputs must be preprocessed (no NaN)")
        return scores

    def explain(self, X: np.ndarray) -> np.ndarray:
        """Contributions to each row's score, (n, F) per feature column or (n, S) per signal (`explains`);
        higher = towards anomalous; always finite."""
        self._check_fitted()
        X = self._check_input(X)
        out = np.asarray(self._explain(X), dtype=np.float64) if len(X) else np.empty((0, 0))
        if not np.isfinite(out).all():
            raise FloatingPointError(f"{self.name}: non-finite explanation; inputs must be preprocessed (no NaN)")
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > self.threshold_).astype(np.int8)

    def prepare_for_serving(self) -> None:
        """Build what makes small batches (served windows) fast, once, before the first request; scores stay
        those of the fitted model to float rounding (each override's test holds them within 1e-6). Training
        and the pipeline's stages never call it. Default: nothing to build."""

    def set_threshold(self, threshold: float) -> BaseDetector:
        """Set the calibrated threshold; +inf means the detector alarms on nothing by itself (a floored bundle then
        alarms by its floor alone, `biostream.models.calibration`)."""
        if np.isnan(threshold) or threshold == -np.inf:
            raise ValueError(f"threshold must be a number or +inf, got {threshold}")
        self.threshold_ = float(threshold)
        return self

    def save(self, folder: str | Path) -> None:
        """Write the detector to `folder` (replaced whole, atomically)."""
        self._check_fitted()
        with atomic_dir(folder) as tmp:
            meta = {"name": self.name, "params": self.get_params(deep=False), "threshold": self.threshold_}
            (tmp / "detector.json").write_text(json.dumps(meta, indent=2, default=_jsonable), encoding="utf-8")
            self._save_state(tmp)

    # --- helpers ----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"{self.name} is not fitted; call fit() or load_detector() first")

    def _check_input(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32 if self.input_view != "window" else np.float64)
        want = {"features": 2, "sequence": 3, "window": 3}[self.input_view]
        if X.ndim != want:
            raise ValueError(f"{self.name} reads the '{self.input_view}' view ({want}-D), got shape {X.shape}")
        return X


SCORE_CHUNK = 2048  # rows scored per call by score_rows and score_view (the same chunks: the same numbers)


def score_rows(det: BaseDetector, pipeline: Any, rows: Any, vitals: Any, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Scores of rows of a feature table, building the detector's input view chunk by chunk
    (`pipeline` is a `biostream.features.InputPipeline`); -inf where a learned detector reads no signal
    (`biostream.features.readiness`: the floor alone speaks there)."""
    views = pipeline.iter_views(det.input_view, rows, vitals, chunk, last_s=det.reads_last_s)
    parts = [det.decision_function(v) for v in views]
    scores = np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
    return undefined_where_unread(det, rows, scores)


def undefined_where_unread(det: BaseDetector, rows: Any, scores: np.ndarray) -> np.ndarray:
    """A learned detector's scores of feature-table rows, -inf at the rows where it reads no signal."""
    if det.input_view == "window":  # the rules read the raw values
        return scores
    return np.where(learned_defined(rows), scores, -np.inf)


def score_view(det: BaseDetector, X: np.ndarray, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Scores of an input view built once (a study's validation rows, scored by every trial), in the chunks
    of `score_rows`: the same numbers as scoring the rows, without building their view again."""
    parts = [det.decision_function(X[i : i + chunk]) for i in range(0, len(X), chunk)]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def load_detector(folder: str | Path) -> BaseDetector:
    folder = Path(folder)
    meta_path = folder / "detector.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no detector.json; is this a saved detector folder?")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("name") not in MODULES:
        raise KeyError(f"{meta_path}: unknown detector '{meta.get('name')}'; registered: {', '.join(NAMES)}")
    cls = detector_class(meta["name"])
    det = cls(**restore_params(cls, meta["params"]))
    det._load_state(folder)
    det.threshold_ = float(meta["threshold"])
    return det


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {type(value).__name__} in detector.json")
