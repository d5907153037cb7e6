"""What the service answers, without BentoML: `Scorer` answers `predict`, `score_series`, `explain` and
`metadata` from a `ModelBundle` and its `ServingSpec`. Plain Python, tested without a server.

An alarm's top signals come from the detector's own explanation, unless the detector says it is too slow to
serve (`top_signals_method = "occlusion"`): then from `occlusion_contributions` (~1 ms a window).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np

from biostream.features.compute import feature_signal_weights
from biostream.features.windows import recording_windows
from biostream.models.bundle import ModelBundle, top_signals
from biostream.models.evaluation import alarm_episodes, apply_policy
from biostream.serving.schemas import Episode, ExplainResult, Metadata, ModelRef, Prediction, SeriesResult
from biostream.serving.spec import ServingSpec

TOP_SIGNALS_METHODS = {  # BaseDetector.top_signals_method -> what `metadata` says of it
    None: "the detector's explanation (explain_method)",
    "occlusion": "occlusion: the score's drop when one signal's features are set to their training median (as if "
                 "the signal were missing)",
}


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


def occlusion_contributions(bundle: ModelBundle, view: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n, S) per-signal contributions of a feature-reading model by occlusion: each window's score minus its
    score with one signal's features at their training median (0 after robust scaling; what the model sees
    when that signal is missing). One batched model call of n x S rows: ~1 ms for one window of the
    One-Class SVM, against ~60 ms for its kernel SHAP."""
    signals = list(bundle.pipeline.signals)
    uses = feature_signal_weights(signals) > 0  # (F, S): the features computed from each signal
    occluded = np.repeat(view[:, None, :], len(signals), axis=1)  # (n, S, F)
    for j in range(len(signals)):
        occluded[:, j, uses[:, j]] = 0.0
    rescored = bundle.detector.decision_function(occluded.reshape(-1, view.shape[1])).reshape(len(view), -1)
    return scores[:, None] - rescored


class Scorer:
    """A loaded bundle with its spec: the service's whole behaviour."""

    def __init__(self, bundle: ModelBundle, spec: ServingSpec) -> None:
        if tuple(bundle.pipeline.signals) != spec.signals:
            raise ValueError(f"the serving spec's signals {spec.signals} differ from the model's "
                             f"{tuple(bundle.pipeline.signals)}: re-run the package stage")
        self.bundle = bundle
        self.spec = spec
        self.model = ModelRef(name=spec.model_name, version=spec.model_version, alias=spec.model_alias)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def predict(self, windows: Sequence[Any]) -> list[Prediction]:
        """Windows as validated by `Schemas.Window` (they carry `.array`)."""
        if not windows:
            return []
        x = np.stack([w.array for w in windows])
        view = self.bundle.pipeline.view(self.bundle.detector.input_view, x)  # built once: score and explain
        scores = self.bundle.detector.decision_function(view)
        alarm = scores > self.threshold
        top: list[list[str]] = [[] for _ in windows]
        if alarm.any():
            idx = np.flatnonzero(alarm)
            for i, names in zip(idx, self.top_signals(view[idx], scores[idx]), strict=True):
                top[i] = names
        # validated already (the windows, the model's finite scores): constructed without validating again,
        # which took ~8 % of a busy service's time holding the GIL
        threshold = self.threshold
        return [Prediction.model_construct(patient_id=w.patient_id, time=w.time, score=float(s), alarm=bool(a),
                                           threshold=threshold, top_signals=t, model=self.model)
                for w, s, a, t in zip(windows, scores, alarm, top, strict=True)]

    def top_signals(self, view: np.ndarray, scores: np.ndarray) -> list[list[str]]:
        """The signals contributing most to each row of an input view (`TOP_SIGNALS_METHODS`)."""
        if self.bundle.detector.top_signals_method == "occlusion":
            return top_signals(occlusion_contributions(self.bundle, view, scores), self.spec.signals,
                               self.spec.top_signals)
        return self.bundle.explain_view(view).top_signals(self.spec.top_signals)

    def series_scores(self, values: np.ndarray, chunk: int = 512) -> np.ndarray:
        """Scores of the windows ending at every second of a recording (S, T), NaN before it starts (as the
        evaluate stage scores test patients)."""
        t = values.shape[1]
        parts = [self.bundle.score(recording_windows(values.T, self.spec.window_s, np.arange(a, min(a + chunk, t))))
                 for a in range(0, t, chunk)]
        return np.concatenate(parts)

    def score_series(self, series: Any) -> SeriesResult:
        values = series.array
        scores = self.series_scores(values)
        t = np.arange(len(scores))
        pid = np.zeros(len(scores), dtype=np.int64)
        alarm = apply_policy(pid, t, scores, self.threshold, self.bundle.policy).astype(bool)
        episodes = []
        for ep in alarm_episodes(pid, t, alarm).itertuples():
            a, b = int(ep.start_s), int(ep.end_s)
            peak = a + int(np.argmax(scores[a:b]))
            window = recording_windows(values.T, self.spec.window_s, np.array([peak]))
            names = self.top_signals(self.bundle.pipeline.view(self.bundle.detector.input_view, window),
                                     scores[peak : peak + 1])[0]
            episodes.append(Episode(start=series.start + timedelta(seconds=a), end=series.start + timedelta(seconds=b),
                                    peak_time=series.start + timedelta(seconds=peak), peak_score=float(scores[peak]),
                                    signals=names))
        return SeriesResult(patient_id=series.patient_id, start=series.start, seconds=len(scores),
                            threshold=self.threshold, scores=scores.tolist(),
                            above_threshold=(scores > self.threshold).tolist(), alarm=alarm.tolist(),
                            episodes=episodes, alarm_policy=self.bundle.policy.to_dict(), model=self.model)

    def explain(self, window: Any) -> ExplainResult:
        x = window.array[None]
        score = float(self.bundle.score(x)[0])
        exp = self.bundle.explain(x)
        features = None if exp.features is None else {k: float(v) for k, v in exp.features.iloc[0].items()}
        return ExplainResult(patient_id=window.patient_id, time=window.time, score=score, threshold=self.threshold,
                             alarm=score > self.threshold, method=self.bundle.detector.describe_explanation(),
                             signals={k: float(v) for k, v in exp.signals.iloc[0].items()}, features=features,
                             top_signals=exp.top_signals(self.spec.top_signals)[0], model=self.model)

    def metadata(self) -> Metadata:
        spec = self.spec
        return Metadata(
            model=self.model, model_uri=spec.model_uri, detector=spec.detector, threshold=self.threshold,
            window_s=spec.window_s,
            signals=[{"name": s, "unit": spec.units[s], "valid": list(spec.valid[s])} for s in spec.signals],
            alarm_policy=self.bundle.policy.to_dict(),
            limits={"max_batch_windows": spec.max_batch_windows, "max_window_s": spec.max_window_s,
                    "max_series_s": spec.max_series_s, "max_missing_fraction": spec.max_missing_fraction,
                    "workers": spec.workers},
            metrics=spec.metrics, explain_method=self.bundle.detector.describe_explanation(),
            top_signals_method=TOP_SIGNALS_METHODS[self.bundle.detector.top_signals_method],
        )
