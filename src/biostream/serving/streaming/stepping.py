"""Scoring a batch's new seconds and stepping each bed's alarm and advisory states through them, in order: the one
answer of every window (`biostream.models.answer`, SCORE_CHUNK windows at a time), the seconds as the store keeps
them and as the answers say them, the episodes each bed opens and closes, and the drivers of the seconds that alarm
(named after the step, only for those)."""

from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from biostream.models.answer import Answer
from biostream.serving.scorer import Scorer
from biostream.serving.streaming.answers import iso
from biostream.serving.streaming.batch import Plan, Windows
from biostream.serving.streaming.policy import Episode, Step
from biostream.serving.streaming.tables import SECONDS_COLUMNS

TOP_SIGNALS = SECONDS_COLUMNS.index("top_signals")  # its place in a stored second's row
SCORE_CHUNK = 256  # windows per model call: the detectors' small-batch fast path (the LSTM's ONNX Runtime session)


class Stepper:
    """The served model and advisory, as a bed's stream steps them."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.signals = scorer.spec.signals
        # the served advisory (none: a bento packaged without one): stepped per rule kind as alarms are, beside them
        self.advisor = scorer.spec.advisor
        self.advisory_signals = {} if self.advisor is None else {r.kind: [r.signal] for r in self.advisor.rules}

    def step(self, plans: list[Plan], windows: Windows, now: float) -> list[list]:
        """Score the plans' new seconds (their windows), step their beds' states, fill their answers; the seconds to
        store."""
        out = self._outputs(windows)
        seconds, named = self._step(plans, windows, out, now)
        if named:
            self._name_signals(windows, out, named)
        return seconds

    def _outputs(self, windows: Windows) -> _Outputs:
        """The answers of the windows (`biostream.models.answer`), SCORE_CHUNK windows at a time: a message's memory
        is its values and a few numbers a second, never its windows (W seconds of every signal a second: ~115 kB)."""
        parts = []
        for a in range(0, windows.n, SCORE_CHUNK):
            b = min(a + SCORE_CHUNK, windows.n)
            x = windows.get(a, b)
            lo, hi = np.searchsorted(windows.last_rows, [a, b])
            for r in windows.last_rows[lo:hi].tolist():  # a bed's new history: the window of its newest second
                windows.newest_windows[r] = x[r - a].copy()
            parts.append(self.scorer.answerer(x, keep_view=False))
        answer = Answer.concat(parts) if parts else None
        if answer is None:
            return _Outputs([], [], [], [], {k: [] for k in self.advisory_signals}, None)
        return _Outputs(score=answer.score.tolist(), technical=answer.technical.tolist(), fired=answer.fired.tolist(),
                        conditions=answer.conditions,
                        advisory={k: np.nan_to_num(answer.advisory[k], nan=-np.inf).tolist()
                                  for k in self.advisory_signals}, answer=answer)

    def _step(self, plans: list[Plan], windows: Windows, out: _Outputs,
              now: float) -> tuple[list[list], list[_Named]]:
        """Step each bed's alarm state through its new seconds, in order: the stored seconds (rows in the store's
        column order), the answers' seconds and episodes, and the seconds whose top signals are still to name."""
        raw, nb = windows.newest().tobytes(), 8 * len(self.signals)  # each row's own second, as stored
        threshold = self.scorer.threshold
        seconds: list[list] = []
        named: list[_Named] = []
        advised: list[tuple[int, Episode]] = []  # advisory episodes opened: their reason is read from the window
        row = 0
        for plan in plans:
            alarms, answer, advisories = plan.state.alarms, plan.answer, plan.state.advisories
            for seg in plan.segments:
                if seg.reset:
                    for ep in (alarms.reset(), *(a.reset() for a in advisories.values())):
                        if ep is not None:
                            plan.touched[ep.start, ep.kind or ""] = ep
                            answer.closed.append(ep)
                for t in range(seg.first, seg.first + len(seg.new)):
                    s, tech = out.score[row], out.technical[row]
                    above = s > threshold
                    step: Step = alarms.step(t, s, above, tech, out.fired[row])
                    if step.closed is not None:
                        plan.touched[step.closed.start, ""] = step.closed
                        answer.closed.append(step.closed)
                    ep = alarms.episode
                    if ep is not None:
                        plan.touched[ep.start, ""] = ep
                    if step.opened is not None:
                        answer.opened.append(step.opened)
                    advisory = False
                    for kind, adv in advisories.items():  # beside the alarm, never instead of it
                        a = out.advisory[kind][row]
                        astep = adv.step(t, a, a > 0, False)
                        if astep.closed is not None:
                            plan.touched[astep.closed.start, kind] = astep.closed
                            answer.closed.append(astep.closed)
                        if adv.episode is not None:
                            plan.touched[adv.episode.start, kind] = adv.episode
                        if astep.opened is not None:
                            astep.opened.kind, astep.opened.signals = kind, self.advisory_signals[kind]
                            answer.opened.append(astep.opened)
                            advised.append((row, astep.opened))
                        advisory |= astep.on
                    # a stored second, in the order of the store's columns (biostream.serving.streaming.store)
                    rec = [plan.bed, t, raw[row * nb:(row + 1) * nb], s, above, tech, step.on, None, now]
                    seconds.append(rec)
                    said = {"time": iso(t), "score": s, "alarm": step.on,
                            "alarm_class": ep.alarm_class if step.on and ep is not None else None, "top_signals": [],
                            "conditions": out.conditions[row], "advisory": advisory}
                    answer.seconds.append(said)
                    if step.on or step.peak:
                        named.append(_Named(row, rec, said if step.on else None, ep if step.peak else None, t))
                    row += 1
        if advised:
            x = windows.rows(np.asarray([r for r, _ in advised]))
            for w, (_, ep) in zip(x, advised, strict=True):
                ep.reason = self.advisor.reason_of_window(w, self.signals, [ep.kind])
        return seconds, named

    def _name_signals(self, windows: Windows, out: _Outputs, named: list[_Named]) -> None:
        """The top signals of alarming seconds and episode peaks, into their answer, stored row and episode (their
        windows and the detector's view of them built again, SCORE_CHUNK at a time)."""
        names: list[list[str]] = []
        for a in range(0, len(named), SCORE_CHUNK):
            idx = np.asarray([n.row for n in named[a:a + SCORE_CHUNK]])
            x = windows.rows(idx)
            names += self.scorer.answerer.drivers(x, out.answer, idx)
        for item, n in zip(named, names, strict=True):
            if item.said is not None:
                item.said["top_signals"] = n
                item.rec[TOP_SIGNALS] = json.dumps(n)
            if item.episode is not None:
                for peak in (item.episode.peak, item.episode.gap_peak):
                    if peak is not None and peak.second == item.second:
                        peak.signals = n


class _Outputs(NamedTuple):
    """The answers of a batch's windows, row by row as lists (what the per-second loop reads)."""

    score: list[float]
    technical: list[bool]
    fired: list[bool]  # a rule of the floor fires
    conditions: list
    advisory: dict[str, list[float]]  # per rule kind the served advisory's score (-inf: cannot judge)
    answer: Answer | None  # the same, as arrays (None: no window)




class _Named(NamedTuple):
    """A second whose top signals are to be named: its row, stored record, answer (when alarming) and episode
    (when at its peak)."""

    row: int
    rec: list
    said: dict | None
    episode: Episode | None
    second: int
