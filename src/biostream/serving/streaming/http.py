"""The HTTP face of bedside streams, without BentoML (the service's router runs them: `biostream.serving.api`):
`POST /ingest` (JSON or Arrow, `biostream.serving.streaming.messages`), a bed's stored seconds
(`GET /beds/<bed>/scores?since=&until=&limit=`) and alarm episodes (`GET /beds/<bed>/episodes?since=`), the open
episodes of every bed (`GET /alarms`), a clinician's acknowledgement of an episode, who and when kept
(`POST /beds/<bed>/episodes/<start>/ack`), and the board's reads. The stored seconds' `alarm` is after the
refractory merge, as `score_series` answers it. Times in answers are ISO 8601 UTC; `since`/`until` take ISO 8601 or
seconds since the epoch (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import numpy as np

from biostream.data.schema import ADVISORY
from biostream.serving.arrow import ARROW_STREAM
from biostream.serving.asgi import Call
from biostream.serving.streaming.answers import Problem, episode_answer, iso
from biostream.serving.streaming.arrow_rows import parse_arrow
from biostream.serving.streaming.engine import StreamEngine
from biostream.serving.streaming.messages import (
    MessageError,
    check_bed,
    parse_json,
    query_params,
    time_text,
    whole_number,
)

QUERY = {"since", "until", "limit"}
MAX_LIMIT = 86400

_log = logging.getLogger("biostream")


def _threaded(method: Callable[[Call], tuple[int, Any]]) -> Callable[[Call], Any]:
    """An endpoint that reads the store: run off the event loop."""

    async def run(self: StreamEndpoints, call: Call) -> tuple[int, Any]:
        return await anyio.to_thread.run_sync(method, self, call)

    run.__name__, run.__doc__ = method.__name__, method.__doc__
    run.__wrapped__ = method  # type: ignore[attr-defined]
    return run


class StreamEndpoints:
    """One service process's stream endpoints over its engine, one method per declared operation
    (`biostream.serving.api`), each taking the request as a `Call`. A message is read and scored whole under one
    lock (its memory is bounded by `max_message_bed_s`; two at once would double it), off the event loop."""

    def __init__(self, engine: StreamEngine, sweep_every_s: float = 5.0) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.sweep_every_s = sweep_every_s
        self._sweeper: asyncio.Task | None = None
        self.monitor: Any = None  # the live monitoring (biostream.monitoring.live), when the bento carries a reference

    # ---------------------------------------------------------------------------------------- POST /ingest
    async def ingest(self, call: Call) -> tuple[int, Any]:
        self._start_sweeper()
        return await anyio.to_thread.run_sync(self.ingest_now, call.body, call.media, call.beds, call.audit)

    def ingest_now(self, body: bytes, media: str = "application/json", beds: tuple[str, ...] | None = None,
                   audit: dict[str, str] | None = None) -> tuple[int, Any]:
        """A message's answer; `beds`: the bed-id prefixes the sender's key may write (None: any), the others
        refused (403 if none is left); `audit`: filled with the beds the message named, for the trail."""
        spec, params = self.engine.scorer.spec, self.engine.params
        with self.lock:
            try:
                chunks, problems = (parse_arrow if media == ARROW_STREAM else parse_json)(body, spec, params)
            except MessageError as error:
                return error.status, {"error": str(error)}
            if beds is not None:
                chunks, foreign = _in_scope(chunks, beds)
                if foreign and not chunks and not problems:
                    return 403, {"error": f"this key may write only beds starting with {', '.join(beds)}: "
                                          f"{foreign[0].error}"}
                problems.extend(foreign)
            if audit is not None:
                audit.update(_named(chunks))
            answers, late = self.engine.ingest(chunks, problems=problems)
        problems += late
        answer = {"beds": [a.to_dict() for a in answers], "problems": problems.to_list(),
                  "problems_total": problems.total, "threshold": self.engine.scorer.threshold,
                  "model": self.engine.scorer.model.model_dump()}
        # a message of which nothing could be stored (unreadable, too late, dated ahead of the clock) is refused as
        # a whole, its problems named; otherwise what was read is kept
        kept = any(a.seconds or a.repeated or a.merged for a in answers)
        return (400 if problems and not kept else 200), answer

    # ---------------------------------------------------------------------------------------- GET
    @_threaded
    def alarms(self, call: Call) -> tuple[int, Any]:
        """GET /alarms: every bed's open episodes."""
        try:
            _query(call)
        except ValueError as error:
            return 400, {"error": str(error)}
        return 200, {"open": [episode_answer(e) for e in self.engine.store.episodes(open_only=True)]}

    @_threaded
    def episodes(self, call: Call) -> tuple[int, Any]:
        """GET /beds/<bed>/episodes: a bed's episodes."""
        try:
            bed = check_bed(call.params["bed"], "the bed id in the path")
            since, _, _ = _query(call)
        except ValueError as error:
            return 400, {"error": str(error)}
        return 200, {"bed": bed, "episodes": [episode_answer(e) for e in self.engine.store.episodes(bed, since=since)]}

    @_threaded
    def scores(self, call: Call) -> tuple[int, Any]:
        """GET /beds/<bed>/scores: a bed's stored seconds."""
        try:
            bed = check_bed(call.params["bed"], "the bed id in the path")
            since, until, limit = _query(call)
        except ValueError as error:
            return 400, {"error": str(error)}
        return 200, self.stored_seconds(bed, since, until, limit)

    @_threaded
    def beds(self, call: Call) -> tuple[int, Any]:
        """GET /beds: the board's page of beds."""
        from biostream.serving import board

        try:
            query = board.board_query(call.query)
        except ValueError as error:
            return 400, {"error": str(error)}
        return 200, board.board(self.engine.store, self.engine.scorer, query, monitoring=self.monitoring_state())

    @_threaded
    def explain_episode(self, call: Call) -> tuple[int, Any]:
        """GET /beds/<bed>/episodes/<start>/explain: why an episode opened."""
        from biostream.serving import board

        try:
            bed = check_bed(call.params["bed"], "the bed id in the path")
            query_params(call.query, (), f"GET /beds/{bed}/episodes/<start>/explain")
            start = time_text(call.params["start"], "the episode's start in the path")
        except ValueError as error:
            return 400, {"error": str(error)}
        answer = board.explain_answer(self.engine.store, self.engine.scorer, bed, start)
        if answer is None:
            return 404, {"error": f"bed {bed!r} has no alarm episode that started at {iso(start)}: GET "
                                  f"/beds/{bed}/episodes lists its episodes and their starts"}
        if isinstance(answer, str):
            return 404, {"error": f"{answer}: nothing to explain"}
        return 200, answer

    @_threaded
    def report(self, call: Call) -> tuple[int, Any]:
        """GET /beds/<bed>/report: a bed's case report."""
        from biostream.reporting.case import FORMATS, render
        from biostream.serving import board
        from biostream.serving.asgi import Document
        from biostream.serving.streaming.cases import case_of_bed

        store = self.engine.store
        try:
            bed = check_bed(call.params["bed"], "the bed id in the path")
            asked = board.report_query(call.query)
            period = board.report_period(store, bed, asked["since"], asked["until"])
        except ValueError as error:  # ItemError is one
            return 400, {"error": str(error)}
        if isinstance(period, str):
            return 404, {"error": period}
        case = case_of_bed(store, self.engine.scorer, bed, *period)
        ext = {"html": "html", "pdf": "pdf", "text": "txt"}[asked["format"]]
        name = f"case-{bed}-{iso(period[0])[:10]}.{ext}".replace(":", "")
        return 200, Document(render(case, asked["format"]), FORMATS[asked["format"]], name)

    async def monitoring(self, call: Call) -> tuple[int, Any]:
        """GET /monitoring: the live patients against the model's reference (`biostream.monitoring`)."""
        if self.monitor is None:
            return 503, {"error": "this bento carries no reference of its training inputs: re-run train and package "
                                  "(dvc repro)"}
        if call.query:
            return 400, {"error": "GET /monitoring takes no query parameter"}
        return 200, self.monitor.state()

    def monitoring_state(self) -> dict[str, Any] | None:
        """The newest monitoring state (drift and alarm-rate alerts) the service keeps, if any."""
        return None if self.monitor is None else self.monitor.state()

    # ---------------------------------------------------------------------------------------- POST .../ack
    @_threaded
    def acknowledge(self, call: Call) -> tuple[int, Any]:
        """POST /beds/<bed>/episodes/<start>/ack[?advisory=<kind>]."""
        return self.acknowledge_now(call.params["bed"], call.params["start"], call.who, audit=call.audit,
                                    query=call.query)

    def acknowledge_now(self, bed: str, start: str, who: str, now: float | None = None,
                        audit: dict[str, str] | None = None, query: str = "") -> tuple[int, Any]:
        """The episode that started at `start` at `bed` (an alarm or condition; `?advisory=<kind>`: the advisory of
        that rule kind), acknowledged by the key `who` (while an acknowledgement holds, a second one changes nothing,
        and says so)."""
        try:
            bed = check_bed(bed, "the bed id in the path")
            first = time_text(start, "the episode's start in the path")
            asked = query_params(query, ("advisory",), "POST /beds/<bed>/episodes/<start>/ack")
            kind, kinds = asked.get("advisory", ""), sorted(self.engine.advisory_signals)
            if "advisory" in asked and kind not in kinds:  # blank or another kind: named
                raise ValueError(f"advisory is {kind[:40]!r}: the served advisory warns of {kinds or 'nothing'} "
                                 "(POST /metadata: advisory.kinds)")
        except ValueError as error:
            return 400, {"error": str(error)}
        episode, changed = self.engine.store.acknowledge(bed, first, who, time.time() if now is None else now, kind)
        what = f"{kind} advisory" if kind else "alarm"
        if episode is None:
            return 404, {"error": f"bed {bed!r} has no {what} episode that started at {iso(first)}: GET "
                                  f"/beds/{bed}/episodes lists its episodes, their starts and kinds"}
        if audit is not None and kind:
            audit["detail"] = f"{kind} advisory of {iso(first)}"
        if not changed and audit is not None:
            audit["detail"] = (f"{what} episode {iso(first)}: already acknowledged by {episode['acked_by']} at "
                               f"{iso(int(episode['acked_at']))}, nothing changed")
        return 200, {"bed": bed, "episode": episode_answer(episode), "changed": changed}

    # ---------------------------------------------------------------------------------------- reads
    def get_now(self, path: str, query: str) -> tuple[int, Any]:
        """A GET of these endpoints by its path (tests, the board's Python client): matched as the service
        matches it (`biostream.serving.api`), run here."""
        from biostream.serving.api import operations

        match = operations(self.engine.scorer.spec).match("GET", path)
        if match is None or match.op.handler is None or not hasattr(self, match.op.handler):
            return 404, {"error": f"no GET endpoint {path[:200]!r}"}
        call = Call(match.params, query)
        handler = getattr(type(self), match.op.handler)
        inner = getattr(handler, "__wrapped__", None)
        return inner(self, call) if inner is not None else asyncio.run(handler(self, call))

    def stored_seconds(self, bed: str, since: int | None, until: int | None, limit: int) -> dict[str, Any]:
        rows = self.engine.store.seconds(bed, since, until, limit)
        out = {"bed": bed, "threshold": self.engine.scorer.threshold, "seconds": []}
        if not rows:
            return out
        spans = [(e["start"], e["end"] if e["end"] is not None else e["last_on"] + 1, e["alarm_class"])
                 for e in self.engine.store.episodes(bed, since=rows[0]["second"])]
        alarms = [e for e in spans if e[2] != ADVISORY]  # an advisory is no alarm: its seconds say `advisory`
        advisories = [e for e in spans if e[2] == ADVISORY]
        for r in rows:
            t = r["second"]
            cls = next((c for a, b, c in alarms if a <= t < b), None)
            vals = np.frombuffer(r["vals"], dtype=np.float64)
            out["seconds"].append({
                "time": iso(t), "score": r["score"], "above_threshold": r["above"], "alarm": cls is not None,
                "alarm_class": cls, "advisory": any(a <= t < b for a, b, _ in advisories),
                "top_signals": json.loads(r["top_signals"] or "[]"),
                "vitals": {s: (None if np.isnan(v) else float(v)) for s, v in zip(self.engine.signals, vals,
                                                                                    strict=True)},
                "scored_at": iso(int(r["scored_at"]))})
        return out

    # ---------------------------------------------------------------------------------------- silence
    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        retained = time.monotonic()
        while True:
            await asyncio.sleep(self.sweep_every_s)
            try:
                await anyio.to_thread.run_sync(self.sweep_now)
                await anyio.to_thread.run_sync(self.engine.store.checkpoint)  # outside the lock: ingests go on
            except Exception:  # a busy or unreachable store: logged, tried again at the next sweep
                _log.exception("closing silent beds failed")
            # sqlite: this service is the store's only keeper; PostgreSQL: its owner's `biostream retention` (the
            # service's role may not drop a partition)
            if self.engine.store.sqlite and time.monotonic() - retained >= self.engine.params.retention.every_s:
                retained = time.monotonic()
                try:  # outside the lock: it takes the write lock a few beds at a time
                    done = await anyio.to_thread.run_sync(self.retain_now)
                    _log.info("retention: %s", done)
                except Exception:
                    _log.exception("the retention sweep failed; tried again in %d s",
                                   self.engine.params.retention.every_s)

    def retain_now(self, now: float | None = None) -> dict[str, Any]:
        """One retention pass over the store (`biostream.serving.database.retention`)."""
        from biostream.serving.database.retention import run

        return run(self.engine.store.url, self.engine.params.retention, now)

    def sweep_now(self, now: float | None = None) -> list[dict[str, Any]]:
        """Close every silent bed, a step at a time: the lock is let go between steps, so ingests go on."""
        closed: list[dict[str, Any]] = []
        while True:
            with self.lock:
                closed += self.engine.sweep(time.time() if now is None else now)
                if not self.engine.more_silent:
                    return closed



def _query(call: Call) -> tuple[int | None, int | None, int]:
    """since, until and limit of a stream read's query (ValueError naming a bad one)."""
    q = query_params(call.query, QUERY, "GET /beds/<bed>/scores, /beds/<bed>/episodes and /alarms")
    since = None if "since" not in q else time_text(q["since"], "since")
    until = None if "until" not in q else time_text(q["until"], "until")
    return since, until, whole_number(q.get("limit", "600"), "limit", 1, MAX_LIMIT, "seconds")


def _in_scope(chunks: list, prefixes: tuple[str, ...]) -> tuple[list, list[Problem]]:
    """The chunks of beds a key may write (their ids start with one of `prefixes`), and a refusal for each other."""
    kept, refused = [], []
    for c in chunks:
        if c.bed.startswith(prefixes):
            kept.append(c)
        else:
            refused.append(Problem(c.index, c.bed, "bed", c.bed, f"a bed starting with {', '.join(prefixes)}",
                                   f"bed {c.bed!r} is not one this key may write (beds starting with "
                                   f"{', '.join(prefixes)}): not stored", "nothing of this item"))
    return kept, refused


def _named(chunks: list) -> dict[str, str]:
    """What a stream message's audit entry names: its bed (one), or the first beds and how many."""
    beds = list(dict.fromkeys(c.bed for c in chunks))
    if len(beds) == 1:
        return {"target": beds[0]}
    if not beds:
        return {}
    shown = ", ".join(beds[:8])
    return {"detail": (f"{len(beds)} beds: {shown}" + (", ..." if len(beds) > 8 else ""))[:200]}
