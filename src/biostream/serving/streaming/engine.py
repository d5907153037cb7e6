"""Bedside streams: each bed's newest seconds in, every new second scored as the window ending at it, alarms and
episodes out, everything written to the stream store (`biostream.serving.streaming.store`).

A bed keeps its last `window_s` seconds of values and its alarm state (`biostream.serving.streaming.policy`).
Seconds are whole seconds since the epoch (a sample's time rounded to the nearest second). Streamed second by
second, a recording gets the scores, alarms and episodes `score_series` gives it whole (tested to 1e-6). What a
message does to a bed (new seconds, gaps, repeats, late values, silence): `StreamEngine`; docs/streams.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

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
from biostream.serving.streaming.policy import BedAlarms
from biostream.serving.streaming.stepping import Stepper
from biostream.serving.streaming.store import BedRow, Store
from biostream.serving.streaming.writes import Writes, batch_writes, state_json

_log = logging.getLogger("biostream")
CLOSE_STEP = 250  # silent beds closed in one transaction (a sweep); more wait for the next sweep, between batches


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
        self.stepper = Stepper(scorer)  # scores new seconds and steps the beds' alarm and advisory states
        self.advisor, self.advisory_signals = self.stepper.advisor, self.stepper.advisory_signals
        # cached states (the store's version says whether one is current), the least recently used dropped beyond
        # `state_cache_mb`: a process's memory does not grow with every bed it ever saw
        per_bed = len(self.signals) * self.window_s * 8
        self.beds = StateCache(max(1, params.state_cache_mb * (1 << 20) // per_bed))
        self._empty = np.full((len(self.signals), self.window_s), np.nan)  # a new bed's history (never written)
        self._empty.flags.writeable = False
        self._acks = (params.ack_silence_s, params.ack_worsening)  # how long an acknowledgement holds (the store)
        self.more_silent = False  # the last sweep left silent beds for the next one (`sweep`'s step)

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

    def _state(self, row: BedRow, history: bool = True) -> BedState:
        """A bed's state as of its stored `row`: the cached one if it is that version, else loaded from the store
        (without its values' history where the caller needs none: closing a recording; not cached then)."""
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
            if not history:
                return state
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
                self._reopen(bed, states[bed], newest, min(c.start for c in by_bed[bed]))
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

    def _reopen(self, bed: str, state: BedState, newest: int, first_sent: int) -> None:
        """A closed bed's state as of its newest stored second, its recording from there on, and its history where
        the message may continue or repeat it (its first second within `silent_s` after the newest stored one);
        else the message starts a new recording, which reads nothing before it: no history is read (a ward back
        after a silence costs no read of each bed's 30 min)."""
        if first_sent - newest - 1 < self.params.silent_s:
            state.values, state.first_second = self._history(bed, newest)
        else:
            state.values, state.first_second = self._empty, newest
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
        seconds = self.stepper.step(plans, windows, now)
        return [plan.answer for plan in plans], batch_writes(plans, windows, seconds, now, self.model_version)

    # ------------------------------------------------------------------------------------------ silence
    def sweep(self, now: float | None = None, outgoing: Outgoing | None = None,
              step: int | None = None) -> list[dict[str, Any]]:
        """Close the beds silent for `silent_s` (wall clock), at most `step` of them (default CLOSE_STEP; the longest
        silent first; `more_silent` says whether others wait for the next sweep): their open episodes end, their next
        message starts a new recording; and end the conditions "no valid data" no refusal has renewed for as long.
        Returns the episodes of the recordings closed. A ward that falls silent together (a gateway down) is closed a
        step at a time between batches, never in one transaction that holds every other bed's ingest."""
        from biostream.serving.streaming import refusals

        now = time.time() if now is None else now
        step = CLOSE_STEP if step is None else step
        silent = self.store.silent_beds(now - self.params.silent_s, limit=step + 1)
        self.more_silent = len(silent) > step
        closed = self.close(silent[:step], now, only_before=now - self.params.silent_s, outgoing=outgoing)
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
                st = self._state(row, history=False)  # closing reads no history
                for ep in (st.alarms.reset(), *(a.reset() for a in st.advisories.values())):
                    if ep is not None:
                        rec = episode_record(bed, ep, now, self.model_version)
                        episodes.append(rec)
                        closed.append(episode_answer(rec))
                st.values = self._empty
                st.last_second = st.first_second = None
                bed_rows.append({"bed": bed, "last_second": None, "last_arrival": row.last_arrival,
                                 "state": state_json(st), "refused_since": st.refused_since})
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
