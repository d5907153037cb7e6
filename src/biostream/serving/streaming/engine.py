"""Bedside streams: each bed's newest seconds in, every new second scored as the window ending at it, alarms and
episodes out, everything written to the stream store (`biostream.serving.streaming.store`).

A bed keeps its last `window_s` seconds of values and its alarm state (`biostream.serving.streaming.policy`).
Seconds are whole seconds since the epoch (a sample's time rounded to the nearest second). Streamed second by
second, a recording gets the scores, alarms and episodes `score_series` gives it whole (tested to 1e-6). What a
message does to a bed (new seconds, gaps, repeats, late values, silence): `StreamEngine`; docs/streams.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import sqlalchemy as sa

from biostream.models.answer import Answer
from biostream.serving.scorer import Scorer
from biostream.serving.streaming.answers import (
    BedAnswer,
    Chunk,
    Outgoing,
    Problem,
    Problems,
    episode_answer,
    episode_record,
    iso,
)
from biostream.serving.streaming.batch import Plan, StateCache, Windows
from biostream.serving.streaming.params import StreamParams
from biostream.serving.streaming.policy import BedAlarms, Episode, Step
from biostream.serving.streaming.store import SECONDS_COLUMNS, BedRow, Store

_log = logging.getLogger("biostream")
TOP_SIGNALS = SECONDS_COLUMNS.index("top_signals")  # its place in a stored second's row
SCORE_CHUNK = 256  # windows per model call: the detectors' small-batch fast path (the LSTM's ONNX Runtime session)


@dataclass
class BedState:
    values: np.ndarray  # (S, W): the last W seconds up to `last_second`, NaN = missing
    last_second: int | None
    alarms: BedAlarms
    version: int = 0
    first_second: int | None = None  # the recording's first second
    refused_since: int | None = None  # the start of its open condition "no valid data" (`refusals`)
    advisories: dict[str, BedAlarms] = field(default_factory=dict)  # the served advisory's state, per rule kind


class StreamEngine:
    """The beds of one process, over a shared store. For each bed, in a message:

    * a second after the newest one is new: it is scored, with the seconds between (a gap: nothing arrived) scored
      as missing data, as `score_series` scores a recording with a hole; a gap of `silent_s` or more starts a new
      recording (nothing before it is read);
    * a second already stored is a repeat (a no-op), whether the bed is open, closed or unknown to this process (the
      store is asked about seconds older than the history kept), unless it carries values that were missing there:
      those are merged in for the windows still to come (a late sample; its own score stays what was answered),
      within `late_s` of the newest second; an older one is refused, with the reason;
    * a value outside its signal's physiological range is stored as missing and named (bed, field, value, limit);
      the rest of the message is kept.

    A bed whose last message is `silent_s` old is closed (`sweep`): its open episode ends at its last alarm second.
    Its next message continues its recording from the stored seconds if its first new second follows the newest
    stored one by less than `silent_s` (a gateway replaying its buffer after an outage: the stored seconds are
    repeats), else starts a new recording. A batch is one transaction; if the store refuses it for one bed (a second
    it already has that the bed's state did not know of), the batch is written bed by bed and only that bed's
    seconds are refused, named (`_bed_by_bed`): one bed never costs the others their seconds, and a Redis entry
    never becomes a message that fails forever.
    """

    def __init__(self, scorer: Scorer, store: Store, params: StreamParams) -> None:
        self.scorer, self.store, self.params = scorer, store, params
        self.signals = scorer.spec.signals
        self.window_s = scorer.spec.window_s
        self.model_version = scorer.spec.model_version  # kept with each episode it opens
        self.policy = scorer.bundle.policy
        # the served advisory (none: a bento packaged without one): stepped per rule kind as alarms are, beside them
        self.advisor = scorer.spec.advisor
        self.advisory_signals = {} if self.advisor is None else {r.kind: [r.signal] for r in self.advisor.rules}
        # cached states (the store's version says whether one is current), the least recently used dropped beyond
        # `state_cache_mb`: a process's memory does not grow with every bed it ever saw
        per_bed = len(self.signals) * self.window_s * 8
        self.beds = StateCache(max(1, params.state_cache_mb * (1 << 20) // per_bed))
        self._empty = np.full((len(self.signals), self.window_s), np.nan)  # a new bed's history (never written)
        self._empty.flags.writeable = False
        self._acks = (params.ack_silence_s, params.ack_worsening)  # how long an acknowledgement holds (the store)

    # ------------------------------------------------------------------------------------------ state
    def _fresh(self) -> BedState:
        return BedState(self._empty, None, BedAlarms(self.policy), advisories=self._advisories({}))

    def _advisories(self, stored: Mapping[str, Any]) -> dict[str, BedAlarms]:
        """A bed's advisory states, from its stored ones where it has them (a kind new to it starts afresh)."""
        if self.advisor is None:
            return {}
        policy = self.advisor.policy
        return {k: BedAlarms.from_dict(policy, stored[k]) if k in stored else BedAlarms(policy)
                for k in self.advisory_signals}

    def _state(self, row: BedRow) -> BedState:
        """A bed's state as of its stored `row`: the cached one if it is that version, else loaded from the store."""
        bed = row.bed
        cached = self.beds.get(bed)
        if cached is not None and cached.version == row.version:
            return cached
        state = self._fresh()
        state.version, state.refused_since = row.version, row.refused_since
        stored = row.state
        if stored is not None:  # resume from the store
            state.alarms = BedAlarms.from_dict(self.policy, stored["alarms"])
            state.advisories = self._advisories(stored.get("advisories") or {})
        if row.last_second is not None and stored is not None:
            state.last_second, state.first_second = row.last_second, stored["first_second"]
            state.values = self._history(bed, row.last_second)[0]
        self.beds[bed] = state
        return state

    def _history(self, bed: str, last_second: int) -> tuple[np.ndarray, int | None]:
        """A bed's stored values of its last `window_s` seconds up to `last_second` (S, W), and the oldest of them."""
        values = np.full((len(self.signals), self.window_s), np.nan)
        kept = self.store.recent_values(bed, last_second, self.window_s)
        for second, vals in kept:
            values[:, self.window_s - 1 - (last_second - second)] = vals
        return values, min((second for second, _ in kept), default=None)

    # ------------------------------------------------------------------------------------------ ingest
    def ingest(self, chunks: Sequence[Chunk], now: float | None = None, outgoing: Outgoing | None = None,
               problems: Sequence[Problem] = ()) -> tuple[list[BedAnswer], list[Problem]]:
        """Score the new seconds of `chunks` and store them; per bed, what was answered, and what was refused.
        `outgoing`: the batch's result message, rendered from these and kept in the same commit (the outbox).
        `problems`: what reading the message refused already; a bed whose data this message refused and none
        stored gets the technical condition "no valid data" (`biostream.serving.streaming.refusals`).

        Seconds later than the server's clock by more than `max_skew_s` are refused (they would become the bed's
        newest second, and every true second after it a late one). Optimistic: the beds' states are read and the
        seconds scored without a lock; the write transaction then checks that no other process wrote these beds
        meanwhile (their versions) and, if one did, the batch is planned and scored again from the newer states. A
        cached state is dropped whenever its write fails."""
        from biostream.serving.streaming import refusals

        now = time.time() if now is None else now
        chunks, ahead = refusals.within_clock(chunks, now, self.params.max_skew_s)
        answers, late = self._ingest(chunks, now, outgoing)
        refused = Problems(ahead + late)
        every = Problems()
        every.extend(problems)
        every.extend(refused)
        refusals.refuse(self, every, answers, now)
        return answers, refused

    def _ingest(self, chunks: Sequence[Chunk], now: float,
                outgoing: Outgoing | None) -> tuple[list[BedAnswer], list[Problem]]:
        by_bed: dict[str, list[Chunk]] = {}
        for c in chunks:
            by_bed.setdefault(c.bed, []).append(c)
        if not by_bed:
            return [], []
        for _ in range(20):
            try:
                return self._ingest_once(by_bed, now, outgoing)
            except _Stale:
                pass
            except BaseException as error:
                for bed in by_bed:
                    self.beds.pop(bed, None)
                if _conflict(error):
                    return self._bed_by_bed(by_bed, now, outgoing, error)
                raise
        raise RuntimeError(f"beds {sorted(by_bed)[:5]}...: written by another process 20 times while this one scored "
                           f"them; send each bed's seconds to one process at a time")

    def _bed_by_bed(self, by_bed: Mapping[str, list[Chunk]], now: float, outgoing: Outgoing | None,
                    error: BaseException) -> tuple[list[BedAnswer], list[Problem]]:
        """The store refused a batch for one of its beds: write each bed alone; a bed refused alone is named."""
        if len(by_bed) == 1:
            bed, parts = next(iter(by_bed.items()))
            first = min(parts, key=lambda c: c.start)
            span = f"{iso(first.start)} to {iso(max(c.start + c.values.shape[1] - 1 for c in parts))}"
            answers, problems = [BedAnswer(bed)], [Problem(
                first.index, bed, "start", span, "seconds the store does not have",
                f"bed {bed!r}: the stream store already has some of its seconds {span} that its stored state does not "
                f"account for ({type(error).__name__}); none of this bed's seconds in this message were stored. Read "
                f"GET /beds/{bed}/scores for what is stored, and tell the store's administrator", "the other beds",
                refused=True)]
            _log.error("bed %r refused by the store: %s", bed, error)
        else:
            answers, problems = [], []
            for parts in by_bed.values():
                a, p = self._ingest(parts, now, None)
                answers += a
                problems += p
        if outgoing is not None:
            outgoing.message = outgoing.render(answers, problems)
            with self.store.transaction([]) as tx:
                outgoing.id = tx.outbox(outgoing.message, now, outgoing.published)
        return answers, problems

    def _ingest_once(self, by_bed: Mapping[str, list[Chunk]], now: float,
                     outgoing: Outgoing | None) -> tuple[list[BedAnswer], list[Problem]]:
        # a cached bed is taken to be current (the transaction checks it); the others are read from the store
        rows = self.store.bed_rows([bed for bed in by_bed if bed not in self.beds])
        known = set(rows) | {bed for bed in by_bed if bed in self.beds}  # beds the store has (cached: written)
        states = {}
        for bed in by_bed:
            cached = self.beds.get(bed)
            states[bed] = cached if cached is not None else self._state(rows.get(bed) or BedRow(bed, 0, None, None))
        # a bed with no recording open (new, or closed for silence) may have stored seconds: its history is read
        # back, so that a replay of them is a repeat and the seconds after them continue their recording
        idle = [bed for bed, st in states.items() if st.last_second is None and bed in known]
        if idle:
            for bed, newest in self.store.newest_seconds(idle).items():
                self._reopen(bed, states[bed], newest)
        problems: list[Problem] = []
        plans = [self._plan(bed, states[bed], sorted(parts, key=lambda c: c.start)) for bed, parts in by_bed.items()]
        for plan in plans:
            if plan.beyond:
                self._stored_or_refused(plan)
            for c, refused in plan.refused.values():
                problems.append(self._too_late(c, plan.bed, sorted(refused), plan.last_second, plan.first_second))
        answers, writes = self._score(plans, now)
        message = None if outgoing is None else outgoing.render(answers, problems)  # before the lock is taken
        with self.store.transaction(by_bed, known=known, states=False) as tx:
            stale = [p.bed for p in plans if tx.rows[p.bed].version != p.state.version]
            if stale:
                for bed in by_bed:
                    self.beds.pop(bed, None)
                raise _Stale(stale)
            tx.write(*writes, acks=self._acks)
            if outgoing is not None:
                outgoing.message, outgoing.id = message, tx.outbox(message, now, outgoing.published)
        for plan in plans:
            plan.state.version += 1
        return answers, problems

    def _reopen(self, bed: str, state: BedState, newest: int) -> None:
        """A closed bed's state as of its newest stored second: its history, and its recording from there on."""
        state.values, state.first_second = self._history(bed, newest)
        state.last_second = newest

    def _stored_or_refused(self, plan: Plan) -> None:
        """Seconds older than the history kept: a repeat if the store has them with every value they carry, else
        refused (too late to be merged, or before the recording)."""
        ts = [t for _, t, _ in plan.beyond]
        stored = self.store.stored_values(plan.bed, min(ts), max(ts))
        for c, t, v in plan.beyond:
            kept = stored.get(t)
            if kept is not None and not (np.isnan(kept) & ~np.isnan(v)).any():
                plan.answer.repeated += 1
            else:
                plan.refused.setdefault(id(c), (c, []))[1].append(t)

    def _plan(self, bed: str, state: BedState, parts: list[Chunk]) -> Plan:
        """Merge a bed's chunks into its history: segments of new seconds to score (a new recording starts a new
        segment), repeats, and late values merged into seconds already scored."""
        p, w = self.params, self.window_s
        plan = Plan(bed, state)
        seg = plan.segments[-1]
        last, first = state.last_second, state.first_second
        for c in parts:
            values = c.values if c.values.dtype == np.float64 else c.values.astype(np.float64)
            m = values.shape[1]
            old = 0 if last is None else min(m, max(0, last - c.start + 1))  # its seconds already scored
            for j in range(old):
                t, v = c.start + j, values[:, j]
                age = last - t
                if age >= w or t < first:  # not in the history kept: a repeat if the store has it, else refused
                    if not np.isnan(v).all():
                        plan.beyond.append((c, t, v))
                    continue
                col = plan.column(last, t)
                fill = np.isnan(col) & ~np.isnan(v)
                if not fill.any():
                    plan.answer.repeated += 1
                elif age <= p.late_s:
                    col[fill] = v[fill]
                    plan.merged[t] = col
                else:
                    plan.refused.setdefault(id(c), (c, []))[1].append(t)
            if old < m:  # new seconds, consecutive from t
                t = c.start + old
                if last is None or t - last - 1 >= p.silent_s:  # a new recording: nothing before it is read
                    seg = plan.new_segment(t, reset=last is not None or state.alarms.episode is not None)
                    first = t
                elif t - last > 1:  # a gap: missing data, scored as score_series scores a hole
                    seg.new.extend(np.full(len(self.signals), np.nan) for _ in range(t - last - 1))
                seg.new.extend(values.T[old:])  # (S,) views, one per second
                last = c.start + m - 1
        plan.last_second, plan.first_second = last, first
        return plan

    def _too_late(self, c: Chunk, bed: str, refused: list[int], last: int | None, first: int | None) -> Problem:
        p, n = self.params, len(refused)
        span = iso(refused[0]) + ("" if n == 1 else f" to {iso(refused[-1])}")
        return Problem(c.index, bed, "start", span, f"late_s = {p.late_s} s",
                       f"{n} second(s) of bed {bed!r} ({span}) came after later seconds were scored, with values the "
                       f"store does not have, more than stream.late_s = {p.late_s} s before its newest ({iso(last)})"
                       + (f" or before its recording started ({iso(first)})" if first is not None else "")
                       + ": not stored", "the item's other seconds", refused=True)

    def _score(self, plans: list[Plan], now: float) -> tuple[list[BedAnswer], Writes]:
        """Score the plans' new seconds, step their alarm states, and return the answers and what to write."""
        windows = Windows(plans, self.window_s)
        out = self._outputs(windows)
        seconds, named = self._step(plans, windows, out, now)
        if named:
            self._name_signals(windows, out, named)
        return [plan.answer for plan in plans], self._writes(plans, windows, seconds, now)

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

    def _writes(self, plans: list[Plan], windows: Windows, seconds: list[list], now: float) -> Writes:
        """What the batch writes: the beds' new states, the seconds, the merged late values and the episodes touched;
        the answers' episodes in their final form."""
        bed_rows, merged, episodes, ended = [], [], [], []
        for plan in plans:
            st = plan.state
            if st.refused_since is not None and plan.segments[-1].last_row is not None:  # valid data again
                ended.append((int(now), now, plan.bed, st.refused_since))
                st.refused_since = None
            for t, col in plan.merged.items():
                merged.append({"bed": plan.bed, "second": t, "vals": np.ascontiguousarray(col).tobytes()})
                plan.answer.merged += 1
            if plan.touched:
                episodes.extend(episode_record(plan.bed, ep, now, self.model_version) for ep in plan.touched.values())
            if plan.answer.opened:
                plan.answer.opened = [episode_answer(episode_record(plan.bed, e, now, self.model_version))
                                      for e in plan.answer.opened]
            if plan.answer.closed:
                plan.answer.closed = [episode_answer(episode_record(plan.bed, e, now, self.model_version))
                                      for e in plan.answer.closed]
            seg = plan.segments[-1]  # its last W seconds: its newest second's window, or (none new) its history
            st.values = seg.hist if seg.last_row is None else windows.newest_windows.pop(seg.last_row)
            st.last_second, st.first_second = plan.last_second, plan.first_second
            bed_rows.append({"bed": plan.bed, "last_second": st.last_second, "last_arrival": now,
                             "state": self._state_dict(st), "refused_since": st.refused_since})
        return Writes(bed_rows, seconds, merged, episodes, ended)

    @staticmethod
    def _state_dict(st: BedState) -> str:
        """The bed's state as the store keeps it (JSON); written for every bed of every batch, so the usual
        case, no open episode, is formatted by hand (json.dumps: ~6 us a bed)."""
        alarms, advisories = st.alarms, st.advisories
        if alarms.episode is None and all(a.episode is None for a in advisories.values()):
            first = "null" if st.first_second is None else str(int(st.first_second))
            quiet = ", ".join(f'"{k}": {{"recent": [{", ".join(map(str, a.recent))}], "episode": null}}'
                              for k, a in advisories.items())
            return (f'{{"first_second": {first}, "alarms": {{"recent": [{", ".join(map(str, alarms.recent))}], '
                    f'"episode": null}}, "advisories": {{{quiet}}}}}')
        return json.dumps({"first_second": st.first_second, "alarms": alarms.to_dict(),
                           "advisories": {k: a.to_dict() for k, a in advisories.items()}})

    # ------------------------------------------------------------------------------------------ silence
    def sweep(self, now: float | None = None, outgoing: Outgoing | None = None) -> list[dict[str, Any]]:
        """Close the beds silent for `silent_s` (wall clock): their open episodes end, their next message starts a
        new recording; and end the conditions "no valid data" no refusal has renewed for as long. Returns the
        episodes of the recordings closed."""
        from biostream.serving.streaming import refusals

        now = time.time() if now is None else now
        silent = self.store.silent_beds(now - self.params.silent_s)
        closed = self.close(silent, now, only_before=now - self.params.silent_s, outgoing=outgoing)
        refusals.end_stale(self, now)
        return closed

    def close(self, beds: Iterable[str], now: float | None = None, only_before: float | None = None,
              outgoing: Outgoing | None = None) -> list[dict[str, Any]]:
        """End the recordings of `beds` (the stream ended): close their open episodes. `outgoing`: a message of
        the episodes closed (as answers of beds with no new second), kept in the same commit (`ingest`)."""
        now = time.time() if now is None else now
        closed = []
        beds = list(beds)
        if not beds:
            return closed
        try:
            return self._close(beds, now, only_before, outgoing)
        except BaseException:
            for bed in beds:
                self.beds.pop(bed, None)
            raise

    def _close(self, beds: list[str], now: float, only_before: float | None,
               outgoing: Outgoing | None) -> list[dict[str, Any]]:
        closed: list[dict[str, Any]] = []
        with self.store.transaction(beds, states=True) as tx:
            bed_rows, episodes = [], []
            for bed in beds:
                row = tx.rows[bed]
                if row.last_second is None or (only_before is not None and (row.last_arrival or 0) >= only_before):
                    continue  # no recording, or a message came in meanwhile
                st = self._state(row)
                for ep in (st.alarms.reset(), *(a.reset() for a in st.advisories.values())):
                    if ep is not None:
                        rec = episode_record(bed, ep, now, self.model_version)
                        episodes.append(rec)
                        closed.append(episode_answer(rec))
                st.values = self._empty
                st.last_second = st.first_second = None
                bed_rows.append({"bed": bed, "last_second": None, "last_arrival": row.last_arrival,
                                 "state": self._state_dict(st), "refused_since": st.refused_since})
            tx.write(bed_rows, [], [], episodes, acks=self._acks)
            if outgoing is not None and closed:
                outgoing.message = outgoing.render([BedAnswer(c["bed"], closed=[c]) for c in closed], [])
                outgoing.id = tx.outbox(outgoing.message, now, outgoing.published)
            for b in bed_rows:
                cached = self.beds.get(b["bed"])
                if cached is not None:
                    cached.version += 1
        return closed


def _conflict(error: BaseException) -> bool:
    """The store refused a write for a key it already has (sqlite3, psycopg or SQLAlchemy's IntegrityError)."""
    return isinstance(error, sa.exc.IntegrityError) or any(k.__name__ == "IntegrityError" for k in type(error).__mro__)


class _Stale(Exception):
    """Another process wrote some of a batch's beds while this one scored them."""


class Writes(NamedTuple):
    """What one batch writes, in one transaction (the store transaction's `write`, in this order)."""

    beds: list[dict]
    seconds: list[list]
    merged: list[dict]
    episodes: list[dict]
    ended: list[tuple] = []  # conditions "no valid data" ended: (end second, wall clock, bed, start)


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
