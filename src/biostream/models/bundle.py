"""A self-contained model: raw windows in, scores and alarms out.

`ModelBundle` = the input pipeline (window geometry + preprocessor) + a fitted detector with its calibrated
threshold + the alarm policy + the combination with the safety floor and technical checks
(`biostream.models.floor`). It is what `train` logs to MLflow (as a pyfunc: `biostream.tracking.pyfunc`), what
`evaluate` scores with, and what the BentoML service loads: one object, so training, evaluation and serving
cannot drift apart. Its score is 0 at the alarm threshold for every detector (`threshold` is 0.0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from biostream.core.io import atomic_dir
from biostream.features import InputPipeline, feature_names, feature_signal_weights
from biostream.models.alarms import AlarmPolicy
from biostream.models.conditions import Conditions, window_conditions
from biostream.models.detectors import BaseDetector, load_detector, score_rows
from biostream.models.floor import (
    Combination,
    FloorView,
    Outputs,
    combine,
    floor_view_of_rows,
    outputs_of_windows,
)
from biostream.models.reference import Reference
from biostream.models.technical import TechnicalChecks


@dataclass(frozen=True)
class Explanation:
    """Why rows scored as they did: contributions per signal, and per feature for feature-reading models
    (SHAP values; they sum into the signal columns). Higher = towards anomalous."""

    signals: pd.DataFrame
    features: pd.DataFrame | None

    def top_signals(self, k: int = 3) -> list[list[str]]:
        """Per row, the k signals contributing most (positive contributions only), strongest first."""
        return top_signals(self.signals.to_numpy(), list(self.signals.columns), k)


def top_signals(contributions: np.ndarray, names: Sequence[str], k: int = 3) -> list[list[str]]:
    """Per row of (n, S) contributions, the names of the k largest positive ones, strongest first. A
    contribution within 1e-9 of the row's largest is rounding, not a contribution (occlusion rescores in
    another batch, whose last bits differ: a signal that changed nothing must not be named)."""
    order = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    floor = 1e-9 * np.abs(contributions).max(axis=1, initial=0.0)
    return [[str(names[j]) for j in row if contributions[i, j] > floor[i]] for i, row in enumerate(order)]


@dataclass
class ModelBundle:
    pipeline: InputPipeline
    detector: BaseDetector
    policy: AlarmPolicy
    combination: Combination = field(default_factory=Combination.plain)
    reference: Reference | None = None  # its training inputs, for monitoring (bundles before: none)

    threshold: ClassVar[float] = 0.0  # the bundle's score is above threshold when > 0

    @property
    def window_s(self) -> int:
        """Seconds of raw history a window must carry: what the detector reads, and what its floor reads."""
        return max(self.pipeline.input_length(self.detector.input_view), self.combination.reads_s)

    def outputs(self, windows: np.ndarray) -> Outputs:
        """Scores (> 0: above threshold), drivers and classes of raw windows (n, signals, >= window_s), NaN =
        missing."""
        return self.outputs_and_view(windows)[0]

    def outputs_and_view(self, windows: np.ndarray) -> tuple[Outputs, np.ndarray, np.ndarray]:
        """`outputs`, with the detector's input view and raw scores of the windows (the service names an alarm's
        signals from them without building the view again; an empty view for a floored model that adds no alarm:
        every second is the rules')."""
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[2] < self.window_s:
            raise ValueError(f"windows must have shape (n, {len(self.pipeline.signals)} signals, >= {self.window_s} "
                             f"seconds), got {windows.shape}")
        view, read = self._view_and_read(windows)
        if read is not None:
            learned = np.where(read.any(axis=1), self._learned(view), -np.inf)  # no signal read: the floor alone
        else:  # the model adds no alarm (threshold +inf): its floor decides, and nothing of the model is computed
            learned = np.full(len(windows), -np.inf)
        reads = self.combination.reads_s
        history = windows[..., -reads:].astype(np.float64, copy=False) if reads else windows[..., :0]
        out = outputs_of_windows(learned, self.detector.threshold_, self.combination, history, self.pipeline.signals)
        return self._rules_own(out), view, learned

    def view(self, windows: np.ndarray) -> np.ndarray:
        """The detector's input view of raw windows, as `outputs_and_view` answers it (the service builds it again
        for the few windows whose signals it names, rather than keep every window's)."""
        return self._view_and_read(np.asarray(windows))[0]

    def _view_and_read(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.adds_alarms or self.combination.rules is None:
            return self.pipeline.view_and_read(self.detector.input_view, windows)
        return np.empty((len(windows), 0)), None

    def conditions(self, windows: np.ndarray) -> Conditions:
        """The technical conditions at the last second of raw windows (`biostream.models.conditions`)."""
        return window_conditions(windows, self.pipeline.readiness, self.no_signal_s, self.window_s)

    @property
    def no_signal_s(self) -> int:
        """How long a monitored signal reads nothing before it is the condition 'no signal'."""
        technical = self.combination.technical
        return technical.no_signal_s if technical is not None else TechnicalChecks.no_signal_s

    @property
    def adds_alarms(self) -> bool:
        """Whether the detector raises alarms of its own (a threshold of +inf: calibrated to add none, its floor
        alarms alone)."""
        return bool(np.isfinite(self.detector.threshold_))

    def _learned(self, view: np.ndarray) -> np.ndarray:
        """The detector's scores of an input view; not computed for a detector that adds no alarm (every one is
        -inf: they cannot change the bundle's outputs)."""
        if self.adds_alarms:
            return self.detector.decision_function(view)
        return np.full(len(view), -np.inf)

    def score(self, windows: np.ndarray) -> np.ndarray:
        """The bundle's scores of raw windows (0 at the alarm threshold)."""
        return self.outputs(windows).score

    def outputs_of_rows(self, rows: pd.DataFrame, vitals: pd.DataFrame, view: FloorView | None = None) -> Outputs:
        """`outputs` of rows of a feature table (as `evaluate` scores test patients): the detector's input view from
        the stored features (or the raw windows), the floor's from the raw windows (`view`: built already, for a
        floor of the same `floor_key`)."""
        learned = (score_rows(self.detector, self.pipeline, rows, vitals) if self.adds_alarms
                   else np.full(len(rows), -np.inf))
        if view is None:
            view = floor_view_of_rows(self.combination, self.pipeline, rows, vitals)
        return self._rules_own(combine(learned, self.detector.threshold_, self.combination, view,
                                       self.pipeline.signals))

    def _rules_own(self, out: Outputs) -> Outputs:
        """The rules' own bundle (a detector whose threshold is its definition): its score is the rules' score."""
        return out if self.detector.calibrated else replace(out, rules=out.score)

    def explain(self, windows: np.ndarray) -> Explanation:
        """Contributions per signal (and per feature) of raw windows' detector scores."""
        return self.explain_view(self.pipeline.view(self.detector.input_view, windows))

    def explain_view(self, view: np.ndarray) -> Explanation:
        """`explain` of an input view already built (as stages build it from stored features)."""
        contrib = self.detector.explain(view)
        signals = list(self.pipeline.signals)
        if self.detector.explains == "features":
            features = pd.DataFrame(contrib, columns=feature_names(signals))
            return Explanation(pd.DataFrame(contrib @ feature_signal_weights(signals), columns=signals), features)
        return Explanation(pd.DataFrame(contrib, columns=signals), None)

    def rule_signals(self, windows: np.ndarray) -> list[list[str]]:
        """Per window, the signals of the rules beyond their limits, strongest first (what a rule-driven alarm
        names)."""
        rules = self.combination.rules
        if rules is None:
            return [[] for _ in windows]
        per_rule = rules.rule_scores(np.asarray(windows, dtype=np.float64)[..., -rules.reads_last_s:])
        order = np.argsort(-per_rule, axis=1, kind="stable")
        return [list(dict.fromkeys(rules.rules[k]["signal"] for k in row if per_rule[i, k] > 0))
                for i, row in enumerate(order)]

    def predict_frame(self, windows: np.ndarray) -> pd.DataFrame:
        out = self.outputs(windows)
        return pd.DataFrame({"score": out.score, "alarm": (out.score > self.threshold).astype(np.int64),
                             "threshold": np.full(len(out.score), self.threshold),
                             "technical": (out.technical & (out.score > self.threshold)).astype(np.int64)})

    def save(self, folder: str | Path) -> None:
        with atomic_dir(folder) as tmp:
            self.detector.save(tmp / "detector")
            if self.combination.rules is not None:
                self.combination.rules.save(tmp / "floor")
            (tmp / "input_pipeline.json").write_text(json.dumps(self.pipeline.to_dict()), encoding="utf-8")
            (tmp / "alarm_policy.json").write_text(json.dumps(self.policy.to_dict()), encoding="utf-8")
            (tmp / "combination.json").write_text(json.dumps(self.combination.to_dict()), encoding="utf-8")
            if self.reference is not None:
                (tmp / "reference.json").write_text(json.dumps(self.reference.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> ModelBundle:
        folder = Path(folder)
        for name in ("detector", "input_pipeline.json", "alarm_policy.json"):
            if not (folder / name).exists():
                raise FileNotFoundError(f"{folder}: missing {name}; is this a model bundle written by `train`?")
        detector = load_detector(folder / "detector")
        if (folder / "combination.json").is_file():
            rules = load_detector(folder / "floor") if (folder / "floor").is_dir() else None
            combination = Combination.from_dict(json.loads((folder / "combination.json").read_text()), rules)
        else:  # saved before the floor: the detector's score minus its threshold
            combination = Combination.plain()
        return cls(
            InputPipeline.from_dict(json.loads((folder / "input_pipeline.json").read_text(encoding="utf-8"))),
            detector,
            AlarmPolicy(**json.loads((folder / "alarm_policy.json").read_text(encoding="utf-8"))),
            combination,
            Reference.from_dict(json.loads((folder / "reference.json").read_text(encoding="utf-8")))
            if (folder / "reference.json").is_file() else None,
        )
