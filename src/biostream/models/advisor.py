"""The served advisory: the candidate the registry chose (`biostream.models.forward.choose_advisory`) as the
service answers it, with its reason in words ("MAP falling: 71 mmHg, -9 mmHg in 10 min; below 65 within 5 min
at this rate").

An `Advisor` is one baseline candidate of `configs/advisories.yaml`, the bedside rules of the kinds it covers, the
policy its episodes are made with and the signals' labels and units: everything the service needs, JSON-able (the
serving spec carries it; `to_dict`/`from_dict`). It scores seconds with the same functions the evaluate stage
judged (`candidate_scores`, `advisories`): a recording's advisory is the one in the advisory table. A window's
advisory is that of its last second, read from the window alone: None ("cannot judge") where the window holds too
little of the signal the candidate reads (`reads_s`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import TypeAdapter

from biostream.core.config import AlarmRule, SignalCatalog
from biostream.core.params import AlarmPolicy
from biostream.data.labels import segment_starts
from biostream.models.advisory import (
    advisories,
    beyond,
    candidate_scores,
    extrapolated,
    extrapolated_last,
    gates,
    personal_limit,
    window_scores,
)
from biostream.models.candidates import (
    Advisories,
    Candidate,
    Current,
    Extrapolated,
    Gated,
    Personalised,
    Raised,
    kinds_of,
)

_CANDIDATE: TypeAdapter[Candidate] = TypeAdapter(Candidate)


@dataclass(frozen=True)
class Label:
    label: str
    unit: str
    decimals: int

    def value(self, v: float, limit: float | None = None) -> str:
        """The value as a monitor shows it; with more decimals (up to 3 more) where it would round onto `limit` (72.6
        against a limit of 73 reads "72.6", not "73 mmHg, below 73"; 72.98 reads "72.98", not "73.0")."""
        d = self.decimals
        while limit is not None and v != limit and f"{v:.{d}f}" == f"{limit:.{d}f}" and d < self.decimals + 3:
            d += 1
        return f"{v:.{d}f} {self.unit}"


@dataclass(frozen=True)
class Advice:
    """An advisor's answer on a recording's seconds: per second whether an advisory is on (any kind), and its
    episodes (start_s, end_s, kind, reason, signals)."""

    on: np.ndarray
    episodes: pd.DataFrame


@dataclass(frozen=True)
class Advisor:
    candidate: Candidate
    rules: tuple[AlarmRule, ...]  # the rules of the kinds it covers and the model reads
    policy: AlarmPolicy
    labels: dict[str, Label]  # per signal a rule reads
    why: str  # the registry's reason for this source
    decided_on: str  # the source the registry decided on (real recordings)
    episodes_per_hour: float | None = None  # its advisory episodes per patient-hour there (monitoring's reference)

    @classmethod
    def build(cls, config: Advisories, name: str, rules: tuple[AlarmRule, ...], catalog: SignalCatalog,
              signals: tuple[str, ...], why: str, decided_on: str, episodes_per_hour: float | None = None) -> Advisor:
        """The advisor of candidate `name` for a model reading `signals` (kinds whose signal it does not read are
        left out: `metadata` names them)."""
        candidate = config.candidate(name)
        kinds = set(kinds_of(candidate, rules))
        covered = tuple(r for r in rules if r.kind in kinds and r.signal in signals)
        labels = {r.signal: Label(catalog[r.signal].label, catalog[r.signal].unit, catalog[r.signal].decimals)
                  for r in covered}
        return cls(candidate, covered, config.episodes.policy, labels, why, decided_on, episodes_per_hour)

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def reads_s(self) -> int:
        """Seconds of history a window must carry for the advisory to judge its last second."""
        c = self.candidate
        if isinstance(c, Extrapolated):
            return c.fit_s
        if isinstance(c, Personalised):
            return max(c.history_s, c.min_seen_s)
        if isinstance(c, Gated):
            return max(c.fit_s, c.recent_s)
        return self.policy.n

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": _CANDIDATE.dump_python(self.candidate, mode="json"),
                "rules": [asdict(r) for r in self.rules], "policy": asdict(self.policy),
                "labels": {k: asdict(v) for k, v in self.labels.items()}, "why": self.why,
                "decided_on": self.decided_on, "episodes_per_hour": self.episodes_per_hour}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Advisor:
        return cls(_CANDIDATE.validate_json(json.dumps(d["candidate"])), tuple(AlarmRule(**r) for r in d["rules"]),
                   AlarmPolicy(**d["policy"]), {k: Label(**v) for k, v in d["labels"].items()}, d["why"],
                   d["decided_on"], d.get("episodes_per_hour"))  # none in a bento packaged before it was kept

    def describe(self) -> dict[str, Any]:
        """What `metadata` says of it."""
        return {"source": self.name, "type": self.candidate.type, "reference": self.candidate.source,
                "kinds": [r.kind for r in self.rules], "signals": sorted({r.signal for r in self.rules}),
                "reads_s": self.reads_s, "why": self.why, "decided_on": self.decided_on,
                "episodes_per_hour": self.episodes_per_hour,
                "note": "an advisory warns that a bedside rule's event is likely soon; it never delays, replaces "
                        "or silences an alarm"}

    # -------------------------------------------------------------------------------------------------------
    # Answers
    # -------------------------------------------------------------------------------------------------------

    def advise(self, frame: pd.DataFrame, breaks: np.ndarray | None = None) -> Advice:
        """The advisory on the rows of `frame` (one patient's seconds: patient_id, time_s and the signals, sorted by
        time), with its episodes and the reason of each at its first second."""
        if breaks is None:
            breaks = segment_starts(frame["patient_id"].to_numpy(), frame["time_s"].to_numpy())
        advised = advisories(candidate_scores(self.candidate, self.rules, frame, breaks), frame, self.policy, breaks)
        eps = advised.episodes
        if len(eps):
            detail = _Detail(self, frame, breaks)
            first = np.searchsorted(frame["time_s"].to_numpy(), eps["start_s"].to_numpy())
            by_kind = {r.kind: r for r in self.rules}
            eps = eps.assign(reason=[detail.reason(k, int(i)) for k, i in zip(eps["kind"], first, strict=True)],
                             signals=[[by_kind[k].signal] for k in eps["kind"]]).sort_values("start_s",
                                                                                         kind="stable")
        return Advice(advised.any_on(len(frame)), eps)

    def last(self, x: np.ndarray, signals: tuple[str, ...], back: int = 0) -> dict[str, np.ndarray]:
        """Per kind, the score of each window's last second (`back` seconds before it), (n, S, T) in `signals`
        order: from the window alone (`window_scores`), what a bed's stream steps its advisory state with."""
        t = x.shape[2] - back
        r = min(t, self.reads_s)
        values = {s: x[:, signals.index(s), t - r: t] for s in {rule.signal for rule in self.rules}}
        return window_scores(self.candidate, self.rules, values)

    def windows(self, x: np.ndarray, signals: tuple[str, ...], last: dict[str, np.ndarray] | None = None
                ) -> tuple[list[bool | None], list[str | None]]:
        """The advisory of each window's last second, (n, S, T) in `signals` order, from the window alone: on (k of
        its last n seconds score > 0 for a kind), off, or None (cannot judge: no kind has a score); with the
        reason. `last`: the scores of the last seconds, where the caller has them (`self.last(x, signals)`)."""
        n = len(x)
        if not self.rules or n == 0:
            return [None] * n, [None] * n
        k, m = self.policy.k, min(self.policy.n, x.shape[2])
        last = self.last(x, signals) if last is None else last
        counts = {kind: np.zeros(n, dtype=np.int64) for kind in last}
        for back in range(m):
            for kind, score in (last if back == 0 else self.last(x, signals, back)).items():
                counts[kind] += score > 0
        on = {kind: c >= k for kind, c in counts.items()}
        judged = np.zeros(n, dtype=bool)
        for kind, score in last.items():
            judged |= np.isfinite(score) | on[kind]
        any_on = np.zeros(n, dtype=bool)
        for flags in on.values():
            any_on |= flags
        unjudged = self.cannot_judge()
        out: list[bool | None] = [a if j else None for a, j in zip(any_on.tolist(), judged.tolist(), strict=True)]
        reasons: list[str | None] = [None if j else unjudged for j in judged.tolist()]
        for i in np.flatnonzero(any_on).tolist():
            reasons[i] = self.reason_of_window(x[i], signals, [kind for kind, flags in on.items() if flags[i]])
        return out, reasons

    def reason_of_window(self, window: np.ndarray, signals: tuple[str, ...], kinds: list[str]) -> str:
        """The reason of an advisory on at a window's last second (S, T), for the kinds on: from the window's own
        columns, as `window_scores` judged it (no frame built: /predict and a stream give one per advisory)."""
        c = self.candidate
        words = []
        for kind in kinds:
            rule = self._rule(kind)
            v = window[signals.index(rule.signal)]
            seen = v[np.isfinite(v)]
            value = float(seen[-1]) if len(seen) else float("nan")
            now = ahead = limit = recent = None
            if isinstance(c, Extrapolated | Gated):
                span = c.ahead_s if isinstance(c, Extrapolated) else c.fit_s
                now, ahead = (float(a[0]) for a in extrapolated_last(v[None], c.fit_s, (0, span), c.min_fraction))
            if isinstance(c, Gated):
                recent = bool(beyond(v[-c.recent_s:], rule).any())
            elif isinstance(c, Personalised):
                breaks = np.zeros(len(v), dtype=bool)
                breaks[:1] = True
                limit = float(personal_limit(v.astype(np.float64), breaks, rule, c)[-1])
            words.append(self.words(rule, value, now, ahead, limit, recent))
        return "; ".join(words)

    def _rule(self, kind: str) -> AlarmRule:
        return next(r for r in self.rules if r.kind == kind)

    def words(self, rule: AlarmRule, value: float, now: float | None = None, ahead: float | None = None,
              limit: float | None = None, recent: bool | None = None) -> str:
        """An advisory's reason: the value a monitor shows (`value`), and for an extrapolation the line's level now
        and `ahead_s` ahead (a gated limit: `fit_s` ahead, and whether the rule's limit was crossed within
        `recent_s`), for a personal limit the limit."""
        c, lab = self.candidate, self.labels[rule.signal]
        side = "above" if rule.above else "below"
        if isinstance(c, Extrapolated):
            change = (ahead - now) * c.fit_s / c.ahead_s
            beyond = (value - rule.threshold) * (1 if rule.above else -1) > 0
            when = "already" if beyond else f"within {c.ahead_s // 60} min at this rate"
            return (f"{lab.label} {'rising' if change > 0 else 'falling'}: {lab.value(value, rule.threshold)}, "
                    f"{change:+.{lab.decimals}f} {lab.unit} in {c.fit_s // 60} min; {side} {rule.threshold:g} {when}")
        if isinstance(c, Gated):
            raised, said = c.limits[rule.kind], []
            if now is not None and ahead is not None and np.isfinite(ahead - now) \
                    and (ahead - now) * (1 if rule.above else -1) >= c.towards[rule.kind]:
                said.append(f"{'rising' if ahead > now else 'falling'} {ahead - now:+.{lab.decimals}f} {lab.unit} in "
                            f"{c.fit_s // 60} min")
            if recent:
                said.append(f"{side} {rule.threshold:g} within the last {c.recent_s // 60} min")
            return (f"{lab.label} {lab.value(value, raised)}, {side} {raised:g} (the raised limit)"
                    + (f", {' and '.join(said)}" if said else "") + f"; the alarm is at {rule.threshold:g}")
        if isinstance(c, Personalised):
            return (f"{lab.label} {lab.value(value, limit)}, {side} this patient's own limit "
                    f"{limit:.{lab.decimals}f} (median {'+' if rule.above else '-'} {c.k:g} IQR of the last "
                    f"{c.history_s // 60} min); the alarm is at {rule.threshold:g}")
        if isinstance(c, Raised):
            raised = c.limits[rule.kind]
            return (f"{lab.label} {lab.value(value, raised)}, {side} {raised:g} (the raised limit); the alarm is at "
                    f"{rule.threshold:g}")
        assert isinstance(c, Current)
        return (f"{lab.label} {lab.value(value, rule.threshold)}, {side} {rule.threshold:g} (the alarm's limit, "
                "not yet held)")

    def series(self, values: np.ndarray, signals: tuple[str, ...]) -> Advice:
        """The advisory of every second of one recording (S, T) in `signals` order, with its episodes."""
        t = values.shape[1]
        frame = pd.DataFrame({"patient_id": np.zeros(t, dtype=np.int64), "time_s": np.arange(t),
                              **{s: values[signals.index(s)] for s in {r.signal for r in self.rules}}})
        breaks = np.zeros(t, dtype=bool)
        breaks[:1] = True
        return self.advise(frame, breaks)

    def cannot_judge(self) -> str:
        c, names = self.candidate, ", ".join(sorted({self.labels[r.signal].label for r in self.rules}))
        if isinstance(c, Extrapolated):
            return (f"cannot judge: fewer than {max(2, int(c.min_fraction * c.fit_s))} of the last {c.fit_s} s of "
                    f"{names} have a value (the advisory extrapolates {c.fit_s} s; send windows of that length)")
        if isinstance(c, Personalised):
            return (f"cannot judge: fewer than {c.min_seen_s} s of {names} seen (the advisory reads the patient's "
                    f"own last {c.history_s} s)")
        return f"cannot judge: no value of {names}"


class _Detail:
    """What a reason says, computed once per call for the kinds that need more than the value (a line's level and
    slope, a personal limit)."""

    def __init__(self, advisor: Advisor, frame: pd.DataFrame, breaks: np.ndarray) -> None:
        self.advisor, self.frame, self.breaks = advisor, frame, breaks
        self.stretch = np.cumsum(breaks)
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def _held(self, signal: str) -> np.ndarray:
        key = (signal, "held")
        if key not in self._cache:
            self._cache[key] = pd.Series(self.frame[signal].to_numpy(np.float64)).groupby(self.stretch).ffill() \
                .to_numpy()
        return self._cache[key]

    def _line(self, rule: AlarmRule, c: Extrapolated | Gated) -> tuple[np.ndarray, np.ndarray]:
        key = (rule.signal, "line")
        if key not in self._cache:
            v = self.frame[rule.signal].to_numpy(np.float64)
            span = c.ahead_s if isinstance(c, Extrapolated) else c.fit_s
            now, ahead = extrapolated(v, self.breaks, c.fit_s, (0, span), c.min_fraction)
            self._cache[key] = np.stack([now, ahead])
        now, ahead = self._cache[key]
        return now, ahead

    def _recent(self, rule: AlarmRule, c: Gated) -> np.ndarray:
        key = (rule.kind, "recent")
        if key not in self._cache:
            self._cache[key] = gates(self.frame[rule.signal].to_numpy(np.float64), self.breaks, rule, c)[1]
        return self._cache[key]

    def reason(self, kind: str, i: int) -> str:
        a = self.advisor
        rule = a._rule(kind)
        c = a.candidate
        now = ahead = limit = recent = None
        if isinstance(c, Extrapolated | Gated):
            now, ahead = (float(v[i]) for v in self._line(rule, c))
        if isinstance(c, Gated):
            recent = bool(self._recent(rule, c)[i])
        elif isinstance(c, Personalised):
            key = (rule.signal, "personal")
            if key not in self._cache:
                self._cache[key] = personal_limit(self.frame[rule.signal].to_numpy(np.float64), self.breaks, rule, c)
            limit = float(self._cache[key][i])
        return a.words(rule, float(self._held(rule.signal)[i]), now, ahead, limit, recent)
