"""The HTTP face of bedside streams, without BentoML (the service routes to it: `biostream.serving.service`):
`POST /ingest` (JSON or Arrow, `biostream.serving.streaming.messages`), a bed's stored seconds
(`GET /beds/<bed>/scores?since=&until=&limit=`) and alarm episodes (`GET /beds/<bed>/episodes?since=`), the open
episodes of every bed (`GET /alarms`), and a clinician's acknowledgement of an episode, who and when kept
(`POST /beds/<bed>/episodes/<start>/ack`). The stored seconds' `alarm` is after the refractory merge, as
`score_series` answers it. Times in answers are ISO 8601 UTC; `since`/`until` take ISO 8601 or seconds since the
epoch (docs/streams.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import anyio
import numpy as np

from biostream.serving.arrow import ARROW_STREAM
from biostream.serving.streaming.answers import episode_answer, iso
from biostream.serving.streaming.engine import StreamEngine
from biostream.serving.streaming.messages import (
    MessageError,
    check_bed,
    parse_arrow,
    parse_json,
    query_params,
    time_text,
    whole_number,
)

QUERY = {"since", "until", "limit"}
MAX_LIMIT = 86400

_log = logging.getLogger("biostream")


class StreamEndpoints:
    """One service process's stream endpoints over its engine; ingests run one at a time, off the event loop."""

    def __init__(self, engine: StreamEngine, sweep_every_s: float = 5.0) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.sweep_every_s = sweep_every_s
        self._sweeper: asyncio.Task | None = None
        self.monitor: Any = None  # the live monitoring (biostream.monitoring.live), when the bento carries a reference

    # ---------------------------------------------------------------------------------------- POST /ingest
    async def ingest(self, body: bytes, media: str = "application/json") -> tuple[int, Any]:
        self._start_sweeper()
        return await anyio.to_thread.run_sync(self.ingest_now, body, media)

    def ingest_now(self, body: bytes, media: str = "application/json") -> tuple[int, Any]:
        spec, params = self.engine.scorer.spec, self.engine.params
        try:
            chunks, problems = (parse_arrow if media == ARROW_STREAM else parse_json)(body, spec, params)
        except MessageError as error:
            return 400, {"error": str(error)}
        with self.lock:
            answers, late = self.engine.ingest(chunks)
        problems += late
        answer = {"beds": [a.to_dict() for a in answers], "problems": [p.to_dict() for p in problems],
                  "threshold": self.engine.scorer.threshold, "model": self.engine.scorer.model.model_dump()}
        # a message none of whose items could be read is refused as a whole; otherwise what was read is kept
        return (400 if problems and not chunks else 200), answer

    # ---------------------------------------------------------------------------------------- GET
    async def get(self, path: str, query: str) -> tuple[int, Any]:
        return await anyio.to_thread.run_sync(self.get_now, path, query)

    def get_now(self, path: str, query: str) -> tuple[int, Any]:
        parts = path.strip("/").split("/")  # the server has decoded the path once: a bed id is read as it came
        if parts == ["beds"] or (len(parts) == 3 and parts[0] == "beds" and parts[2] == "report") or (
                len(parts) == 5 and parts[0] == "beds" and parts[2] == "episodes" and parts[4] == "explain"):
            return self.board_get(parts, query)
        if parts != ["alarms"] and not (len(parts) == 3 and parts[0] == "beds" and parts[2] in ("scores", "episodes")):
            return 404, {"error": f"no GET endpoint {path[:200]!r}: GET /beds, /beds/<bed>/scores, "
                                  f"/beds/<bed>/episodes, /beds/<bed>/episodes/<start>/explain, /beds/<bed>/report "
                                  f"or /alarms"}
        try:
            q = query_params(query, QUERY, "GET /beds/<bed>/scores, /beds/<bed>/episodes and /alarms")
            since = None if "since" not in q else time_text(q["since"], "since")
            until = None if "until" not in q else time_text(q["until"], "until")
            limit = whole_number(q.get("limit", "600"), "limit", 1, MAX_LIMIT, "seconds")
            bed = None if parts == ["alarms"] else check_bed(parts[1], "the bed id in the path")
        except ValueError as error:  # ItemError is one
            return 400, {"error": str(error)}
        store = self.engine.store
        if bed is None:
            return 200, {"open": [episode_answer(e) for e in store.episodes(open_only=True)]}
        if parts[2] == "episodes":
            return 200, {"bed": bed, "episodes": [episode_answer(e) for e in store.episodes(bed, since=since)]}
        return 200, self.scores(bed, since, until, limit)

    def board_get(self, parts: list[str], query: str) -> tuple[int, Any]:
        """The board's reads (`biostream.serving.board`): every bed, an episode's explanation, a bed's report."""
        from biostream.serving import board

        store, scorer = self.engine.store, self.engine.scorer
        try:
            if parts == ["beds"]:
                return 200, board.board(store, scorer, board.board_query(query), monitoring=self.monitoring())
            bed = check_bed(parts[1], "the bed id in the path")
            if parts[2] == "episodes":
                query_params(query, (), f"GET /beds/{bed}/episodes/<start>/explain")
                start = time_text(parts[3], "the episode's start in the path")
                answer = board.explain_answer(store, scorer, bed, start)
                if answer is None:
                    return 404, {"error": f"bed {bed!r} has no alarm episode that started at {iso(start)}: GET "
                                          f"/beds/{bed}/episodes lists its episodes and their starts"}
                return 200, answer
            asked = board.report_query(query)
            period = board.report_period(store, bed, asked["since"], asked["until"])
        except ValueError as error:  # ItemError is one
            return 400, {"error": str(error)}
        if period is None:
            return 404, {"error": f"bed {bed!r} has no stored second: a report needs a recording (or ask for a "
                                  f"period with since and until)"}
        from biostream.reporting.case import FORMATS, case_of_bed, render
        from biostream.serving.asgi import Document

        case = case_of_bed(store, scorer, bed, *period)
        ext = {"html": "html", "pdf": "pdf", "text": "txt"}[asked["format"]]
        name = f"case-{bed}-{iso(period[0])[:10]}.{ext}".replace(":", "")
        return 200, Document(render(case, asked["format"]), FORMATS[asked["format"]], name)

    def monitoring(self) -> dict[str, Any] | None:
        """The newest monitoring state (drift and alarm-rate alerts) the service keeps, if any."""
        return None if self.monitor is None else self.monitor.state()

    # ---------------------------------------------------------------------------------------- POST .../ack
    async def post(self, path: str, who: str) -> tuple[int, Any]:
        return await anyio.to_thread.run_sync(self.acknowledge_now, path, who)

    def acknowledge_now(self, path: str, who: str, now: float | None = None) -> tuple[int, Any]:
        """`POST /beds/<bed>/episodes/<start>/ack` by the key `who`: the episode, acknowledged (the first
        acknowledgement is kept)."""
        parts = path.strip("/").split("/")
        if not (len(parts) == 5 and parts[0] == "beds" and parts[2] == "episodes" and parts[4] == "ack"):
            return 404, {"error": f"no POST endpoint {path[:200]!r}: POST /beds/<bed>/episodes/<start>/ack "
                                  f"acknowledges an alarm episode"}
        try:
            bed = check_bed(parts[1], "the bed id in the path")
            start = time_text(parts[3], "the episode's start in the path")
        except ValueError as error:
            return 400, {"error": str(error)}
        episode = self.engine.store.acknowledge(bed, start, who, time.time() if now is None else now)
        if episode is None:
            return 404, {"error": f"bed {bed!r} has no alarm episode that started at {iso(start)}: GET "
                                  f"/beds/{bed}/episodes lists its episodes and their starts"}
        return 200, {"bed": bed, "episode": episode_answer(episode)}

    def scores(self, bed: str, since: int | None, until: int | None, limit: int) -> dict[str, Any]:
        rows = self.engine.store.seconds(bed, since, until, limit)
        out = {"bed": bed, "threshold": self.engine.scorer.threshold, "seconds": []}
        if not rows:
            return out
        episodes = self.engine.store.episodes(bed, since=rows[0]["second"])
        for r in rows:
            t = r["second"]
            cls = next((e["alarm_class"] for e in episodes
                        if e["start"] <= t < (e["end"] if e["end"] is not None else e["last_on"] + 1)), None)
            vals = np.frombuffer(r["vals"], dtype=np.float64)
            out["seconds"].append({
                "time": iso(t), "score": r["score"], "above_threshold": r["above"], "alarm": cls is not None,
                "alarm_class": cls, "top_signals": json.loads(r["top_signals"] or "[]"),
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
        with self.lock:
            return self.engine.sweep(time.time() if now is None else now)

