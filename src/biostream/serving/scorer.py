"""What the service answers, without BentoML: `Scorer` answers `predict`, `score_series`, `explain` and
`metadata` from a `ModelBundle` and its `ServingSpec`. Plain Python, tested without a server.

Every answer is `biostream.models.answer`'s (the score, the class of an alarm, what drives it, the technical
conditions, the served advisory): the scorer puts it into the API's shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from biostream.data.labels import find_runs
from biostream.data.schema import ADVISORY, PHYSIOLOGICAL, TECHNICAL
from biostream.features.windows import recording_windows
from biostream.models.alarms import alarm_episodes, class_alarms
from biostream.models.answer import Answerer
from biostream.models.bundle import Explanation, ModelBundle
from biostream.models.conditions import LEARNING, NO_SIGNAL, Conditions, series_conditions
from biostream.models.floor import Outputs
from biostream.serving.schemas import (
    ConditionEpisode,
    Episode,
    ExplainResult,
    Metadata,
    ModelRef,
    Prediction,
    SeriesResult,
)
from biostream.serving.spec import ServingSpec


def safety_of(bundle: ModelBundle) -> dict[str, Any]:
    """What `metadata` says of a bundle's floor, its technical checks and whether the model raises alarms of its
    own (a threshold of +inf: calibrated to add none, the floor's rules alarm alone)."""
    comb = bundle.combination
    rules = [] if comb.rules is None else [f"{r['kind']}: {r['signal']} {r['op']} {r['threshold']:g} for "
                                           f"{r['min_duration_s']} s" for r in comb.rules.rules]
    own = bundle.adds_alarms
    if not rules:
        note = "no floor: the model's own threshold only"
    elif own:
        note = "the bedside rules listed alarm through the model: it alarms wherever they do, and where it sees more"
    else:
        note = ("the bedside rules listed alarm through the model; the model adds no alarm of its own (its threshold, "
                "calibrated on the validation patients, is +inf: its own alarms only added false ones there)")
    return {"floor": rules, "technical_checks": comb.technical is not None, "model_alarms": own, "note": note}


TOP_SIGNALS_METHODS = {  # BaseDetector.top_signals_method -> what `metadata` says of it
    None: "the detector's explanation (explain_method)",
    "occlusion": "occlusion: the score's drop when one signal's features are set to their training median (as if "
                 "the signal were missing)",
}


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


class Scorer:
    """A loaded bundle with its spec: the service's whole behaviour."""

    def __init__(self, bundle: ModelBundle, spec: ServingSpec) -> None:
        if tuple(bundle.pipeline.signals) != spec.signals:
            raise ValueError(f"the serving spec's signals {spec.signals} differ from the model's "
                             f"{tuple(bundle.pipeline.signals)}: re-run the package stage")
        self.bundle = bundle
        self.spec = spec
        self.model = ModelRef(name=spec.model_name, version=spec.model_version, alias=spec.model_alias)
        self.answerer = Answerer(bundle, spec.signals, spec.top_signals, spec.advisor)

    @property
    def threshold(self) -> float:
        return self.bundle.threshold

    def predict(self, windows: Sequence[Any]) -> list[Prediction]:
        """Windows as validated by `Schemas.Window` (they carry `.array`)."""
        if not windows:
            return []
        x = np.stack([w.array for w in windows])
        answer = self.answerer(x)  # the view built once: score and name the signals
        alarm = answer.alarm
        top: list[list[str]] = [[] for _ in windows]
        if alarm.any():
            idx = np.flatnonzero(alarm)
            for i, names in zip(idx, self.answerer.drivers(x[idx], answer, idx), strict=True):
                top[i] = names
        advisory, reasons = self.answerer.advice(x, answer)
        # validated already (the windows, the model's finite scores): constructed without validating again,
        # which took ~8 % of a busy service's time holding the GIL
        threshold = self.threshold
        return [Prediction.model_construct(patient_id=w.patient_id, time=w.time, score=float(s), alarm=bool(a),
                                           alarm_class=c, threshold=threshold, top_signals=t, conditions=k,
                                           advisory=v, advisory_reason=r, model=self.model)
                for w, s, a, c, t, k, v, r in zip(windows, answer.score, alarm, answer.classes, top,
                                                  answer.conditions, advisory, reasons, strict=True)]

    def series_outputs(self, values: np.ndarray, chunk: int = 512) -> Outputs:
        """Outputs of the windows ending at every second of a recording (S, T), NaN before it starts (as the
        evaluate stage scores test patients)."""
        t = values.shape[1]
        return Outputs.concat([self.bundle.outputs(recording_windows(values.T, self.spec.window_s,
                                                                     np.arange(a, min(a + chunk, t))))
                               for a in range(0, t, chunk)])

    def series_scores(self, values: np.ndarray, chunk: int = 512) -> np.ndarray:
        return self.series_outputs(values, chunk).score

    def score_series(self, series: Any) -> SeriesResult:
        values = series.array
        out = self.series_outputs(values)
        scores = out.score
        t = np.arange(len(scores))
        pid = np.zeros(len(scores), dtype=np.int64)
        alarms = class_alarms(pid, t, out, self.threshold, self.bundle.policy)
        episodes = []
        for cls, alarm in alarms.items():
            for ep in alarm_episodes(pid, t, alarm).itertuples():
                a, b = int(ep.start_s), int(ep.end_s)
                peak = a + int(np.argmax(scores[a:b]))
                window = recording_windows(values.T, self.spec.window_s, np.array([peak]))
                names = self.answerer.drivers(window, self.answerer(window))[0]
                episodes.append(Episode(start=series.start + timedelta(seconds=a),
                                        end=series.start + timedelta(seconds=b), alarm_class=cls,
                                        peak_time=series.start + timedelta(seconds=peak),
                                        peak_score=float(scores[peak]), signals=names))
        episodes.sort(key=lambda e: e.start)
        conditions = self.condition_episodes(values, series.start)
        phys, tech = alarms[PHYSIOLOGICAL].astype(bool), alarms[TECHNICAL].astype(bool)
        alarm_class = np.where(phys, PHYSIOLOGICAL, np.where(tech, TECHNICAL, None))
        advisory, advisories = self.series_advisories(values, series.start)
        return SeriesResult(patient_id=series.patient_id, start=series.start, seconds=len(scores),
                            threshold=self.threshold, scores=scores.tolist(),
                            above_threshold=(scores > self.threshold).tolist(), alarm=(phys | tech).tolist(),
                            alarm_class=alarm_class.tolist(), episodes=episodes, conditions=conditions,
                            advisory=advisory, advisories=advisories, alarm_policy=self.bundle.policy.to_dict(),
                            model=self.model)

    def series_advisories(self, values: np.ndarray, start: datetime) -> tuple[list[bool], list[Episode]]:
        """The served advisory of every second of a recording (S, T), and its episodes ([], [] when none is
        served)."""
        advisor = self.spec.advisor
        if advisor is None:
            return [], []
        advice = advisor.series(values, self.spec.signals)
        at = [(start + timedelta(seconds=int(e.start_s)), start + timedelta(seconds=int(e.end_s)))
              for e in advice.episodes.itertuples()]
        return advice.on.tolist(), [Episode(start=a, end=b, alarm_class=ADVISORY, kind=e.kind, reason=e.reason,
                                            source=advisor.name, signals=e.signals)
                                    for (a, b), e in zip(at, advice.episodes.itertuples(), strict=True)]

    def condition_episodes(self, values: np.ndarray, start: datetime) -> list[ConditionEpisode]:
        """The stretches of each technical condition in a recording (S, T), by start: the same conditions as
        `predict` gives the window ending at each second."""
        b = self.bundle
        cond = series_conditions(values.T, b.pipeline.readiness, b.no_signal_s, b.window_s)
        flags = {LEARNING: cond.learning, **{f"{NO_SIGNAL}:{s}": cond.no_signal[:, j]
                                             for j, s in enumerate(self.spec.signals)}}
        out = []
        for code, flag in flags.items():
            runs = find_runs(flag)
            for a, z in zip(runs.start.tolist(), runs.stop.tolist(), strict=True):
                last = Conditions(cond.learning[z - 1 : z], cond.silent_s[z - 1 : z])
                msg = next(m for m, c in zip(last.messages(self.spec.signals)[0], last.codes(self.spec.signals)[0],
                                             strict=True) if c == code)
                out.append(ConditionEpisode(start=start + timedelta(seconds=a), end=start + timedelta(seconds=z),
                                            condition=code, message=msg))
        return sorted(out, key=lambda e: (e.start, e.condition))

    def explain(self, window: Any) -> ExplainResult:
        """What drives a window's score: where a bedside rule of the floor sets it, the rules' score per signal;
        otherwise the detector's own explanation (`explain_method`)."""
        x = window.array[None]
        answer = self.answerer(x)
        score, above = float(answer.score[0]), bool(answer.alarm[0])
        rules = self.bundle.combination.rules if answer.rule_driven[0] else None
        if rules is not None:
            exp = Explanation(pd.DataFrame(rules.explain(x[..., -rules.reads_last_s:]), columns=list(rules.signals)),
                              None)
            method, top = f"the bedside rules of the floor set this score: {rules.describe_explanation()}", \
                self.bundle.rule_signals(x)[0][: self.spec.top_signals]
        else:
            exp = self.bundle.explain_view(answer.view)
            method, top = self.bundle.detector.describe_explanation(), exp.top_signals(self.spec.top_signals)[0]
        features = None if exp.features is None else {k: float(v) for k, v in exp.features.iloc[0].items()}
        return ExplainResult(patient_id=window.patient_id, time=window.time, score=score, threshold=self.threshold,
                             alarm=above, alarm_class=answer.classes[0],
                             driver="model" if rules is None else "rules", method=method,
                             signals={k: float(v) for k, v in exp.signals.iloc[0].items()}, features=features,
                             top_signals=top, model=self.model)

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
            safety=safety_of(self.bundle),
            top_signals_method=TOP_SIGNALS_METHODS[self.bundle.detector.top_signals_method],
            advisory=None if spec.advisor is None else spec.advisor.describe(),
        )
