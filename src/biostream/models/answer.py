"""One answer: what the service says of windows (n, S, T), each the history up to a second. The score and the class
of an alarm, what drives it, the technical conditions and the served advisory are computed here, once, for every
path that answers: `/predict`, `/explain` and `/score_series` (`biostream.serving.scorer`) and every bed's stream
(`biostream.serving.streaming.engine`, which steps its alarm and advisory states with these answers).

What drives an alarm (its top signals) is named only where it is asked for (`Answerer.drivers`: alarming windows,
an episode's peak): where a bedside rule of the bundle's floor drives the score, the rule's signals; otherwise the
detector's own explanation, or `occlusion_contributions` where the detector says its explanation is too slow to
serve (`top_signals_method = "occlusion"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL
from biostream.features.compute import feature_signal_weights
from biostream.models.advisor import Advisor
from biostream.models.bundle import ModelBundle, top_signals


def alarm_classes(above: np.ndarray, technical: np.ndarray) -> list[str | None]:
    """Per row, the class of an above-threshold second, None otherwise."""
    return [(TECHNICAL if t else PHYSIOLOGICAL) if a else None for a, t in zip(above, technical, strict=True)]


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


@dataclass(frozen=True)
class Answer:
    """Per window: the score (above `threshold`: an alarm second), whether it is technical, whether a rule of the
    floor fires and drives it, the detector's own score, the technical conditions (messages), and per rule kind the
    served advisory covers, its score at the window's last second (> 0: on; NaN: cannot judge). `view`: the
    detector's input view (kept where the caller names drivers from it; empty otherwise)."""

    score: np.ndarray
    threshold: float
    technical: np.ndarray
    fired: np.ndarray
    rule_driven: np.ndarray
    learned: np.ndarray
    conditions: list[list[str]]
    advisory: dict[str, np.ndarray] = field(default_factory=dict)
    view: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.score)

    @property
    def alarm(self) -> np.ndarray:
        return self.score > self.threshold

    @property
    def classes(self) -> list[str | None]:
        return alarm_classes(self.alarm, self.technical)

    @classmethod
    def concat(cls, parts: Sequence[Answer]) -> Answer:
        """The answers of consecutive chunks of windows (at least one) as one (without their views)."""
        cat = np.concatenate
        kinds = parts[0].advisory.keys()
        return cls(score=cat([p.score for p in parts]), threshold=parts[0].threshold,
                   technical=cat([p.technical for p in parts]), fired=cat([p.fired for p in parts]),
                   rule_driven=cat([p.rule_driven for p in parts]), learned=cat([p.learned for p in parts]),
                   conditions=[c for p in parts for c in p.conditions],
                   advisory={k: cat([p.advisory[k] for p in parts]) for k in kinds})


class Answerer:
    """A bundle, the signals a request carries (its order), how many drivers to name, and the served advisory
    (None: none served)."""

    def __init__(self, bundle: ModelBundle, signals: tuple[str, ...], top_k: int, advisor: Advisor | None) -> None:
        self.bundle, self.signals, self.top_k, self.advisor = bundle, signals, top_k, advisor

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def __call__(self, x: np.ndarray, keep_view: bool = True) -> Answer:
        """The answer of windows x (n, S, T) in `signals` order, NaN = missing."""
        out, view, learned = self.bundle.outputs_and_view(x)
        advisory = {} if self.advisor is None else self.advisor.last(x, self.signals)
        return Answer(score=out.score, threshold=self.threshold, technical=out.technical,
                      fired=out.rules > self.threshold, rule_driven=out.rule_driven, learned=learned,
                      conditions=self.bundle.conditions(x).messages(self.signals), advisory=advisory,
                      view=view if keep_view else None)

    def drivers(self, x: np.ndarray, answer: Answer, rows: np.ndarray | None = None) -> list[list[str]]:
        """The signals behind the scores of the answer's `rows` (all by default), whose windows are x: a bedside
        rule's where the rules drive it, else those the detector says contribute most (`top_signals_method`). The
        answer's view is used where it has one, else built again for the windows the detector explains."""
        rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        rule_driven, learned = answer.rule_driven[rows], answer.learned[rows]
        out: list[list[str]] = [[] for _ in range(len(rows))]
        by_rules = np.flatnonzero(rule_driven)
        for i, names in zip(by_rules, self.bundle.rule_signals(x[by_rules]), strict=True):
            out[i] = names[: self.top_k]
        by_model = np.flatnonzero(~rule_driven)
        if len(by_model):
            view = self.bundle.view(x[by_model]) if answer.view is None else answer.view[rows][by_model]
            if self.bundle.detector.top_signals_method == "occlusion":
                names = top_signals(occlusion_contributions(self.bundle, view, learned[by_model]), self.signals,
                                    self.top_k)
            else:
                names = self.bundle.explain_view(view).top_signals(self.top_k)
            for i, n in zip(by_model, names, strict=True):
                out[i] = n
        return out

    def advice(self, x: np.ndarray, answer: Answer) -> tuple[list[bool | None], list[str | None]]:
        """The served advisory of each window's last second (on, off, None: cannot judge; none served: None) and
        its reason, from the answer's advisory scores."""
        if self.advisor is None:
            return [None] * len(x), [None] * len(x)
        return self.advisor.windows(x, self.signals, answer.advisory)
