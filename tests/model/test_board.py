"""The bed board's reads (biostream.serving.board through the stream endpoints) on a real sqlite store: every bed,
open alarms first, filtered, sorted and paged; an episode's explanation; a bed's report; the errors named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from biostream.serving.asgi import Document
from biostream.serving.board import report_period
from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.http import StreamEndpoints
from biostream.serving.streaming.store import Store, sqlite_url
from tests.model.test_streams import START, params


@pytest.fixture(scope="module")
def ward(alarming, tmp_path_factory):
    """The alarming bed's first 1,000 s (an episode opens at ~540 s and is still open) and 30 quiet beds (its first
    5 minutes, before anything alarms), through one engine."""
    scorer, pid, values = alarming
    store = Store(sqlite_url(tmp_path_factory.mktemp("board") / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    quiet = values[:, :300].copy()
    for a in range(0, 1000, 100):
        chunks = [Chunk("alarming-bed", START + a, values[:, a:a + 100].copy())]
        if a < 300:
            chunks += [Chunk(f"quiet-{i:02d}", START + a, quiet[:, a:a + 100].copy()) for i in range(30)]
        engine.ingest(chunks, now=float(START + a))
    return StreamEndpoints(engine), scorer


def get(endpoints, path, query=""):
    status, body = endpoints.get_now(path, query)
    return status, body


def test_the_board_lists_open_alarms_first_with_newest_values(ward):
    endpoints, scorer = ward
    status, body = get(endpoints, "/beds", "size=10")
    assert status == 200, body
    assert body["counts"]["beds"] == 31 and body["total"] == 31 and body["pages"] == 4
    first = body["beds"][0]
    episodes = endpoints.engine.store.episodes("alarming-bed", open_only=True)
    assert len(episodes) == 1, "the alarming bed's episode is open"
    assert first["bed"] == "alarming-bed" and first["alarm"]["open"]  # first on the board, its episode as stored
    assert first["alarm"]["alarm_class"] == episodes[0]["alarm_class"]
    assert first["alarm"]["model_version"] == scorer.spec.model_version
    assert all(b["alarm"] is None for b in body["beds"][1:])
    newest = endpoints.engine.store.seconds(first["bed"], limit=1)[0]
    vals = np.frombuffer(newest["vals"], dtype=np.float64)
    signals = scorer.spec.signals
    assert first["vitals"] == {s: (None if np.isnan(v) else float(v)) for s, v in zip(signals, vals, strict=True)}
    assert first["score"] == newest["score"]
    status, page = get(endpoints, "/beds", "q=QUIET-0&sort=bed&size=5&page=2")  # a part of the id, any case
    assert status == 200 and [b["bed"] for b in page["beds"]] == [f"quiet-0{i}" for i in range(5, 10)]
    status, none = get(endpoints, "/beds", "alarm=none&q=alarming")
    assert status == 200 and none["total"] == 0
    status, acked = endpoints.acknowledge_now("alarming-bed", str(episodes[0]["start"]), "k_nurse")
    assert status == 200
    status, body = get(endpoints, "/beds", "alarm=open")
    assert body["total"] == 1 and body["beds"][0]["alarm"]["acknowledged_by"] == "k_nurse"
    assert body["counts"]["unacknowledged"] == 0


def test_an_episode_is_explained_and_reported_as_the_store_has_it(ward):
    endpoints, scorer = ward
    store = endpoints.engine.store
    ep = store.episodes("alarming-bed")[0]
    status, body = get(endpoints, f"/beds/alarming-bed/episodes/{ep['start']}/explain")
    assert status == 200, body
    assert body["episode"]["alarm_class"] == ep["alarm_class"] and body["top_signals"]
    assert json.dumps(body)  # JSON-able
    status, doc = get(endpoints, "/beds/alarming-bed/report", "format=pdf")
    assert status == 200 and isinstance(doc, Document) and doc.media == "application/pdf"
    assert doc.body.startswith(b"%PDF") and doc.filename.endswith(".pdf")
    status, doc = get(endpoints, "/beds/alarming-bed/report", "format=text")
    assert status == 200 and b"physiological" in doc.body
    # by default the report covers the bed's own recording (issue #40: not 24 h with the recording at its right edge)
    first, newest = store.first_second("alarming-bed", 0), store.newest_seconds(["alarming-bed"])["alarming-bed"]
    assert report_period(store, "alarming-bed", None, None) == (first, newest + 1)
    assert f"({(newest + 1 - first) / 3600:.1f} h;".encode() in doc.body
    assert report_period(store, "alarming-bed", None, newest - 10) == (first, newest - 10)


@pytest.mark.parametrize(("path", "query", "status", "names"), [
    ("/beds", "sort=loudest", 400, "sort"),
    ("/beds", "size=0", 400, "size"),
    ("/beds", "size=201", 400, "size"),
    ("/beds", "colour=red", 400, "colour"),
    ("/beds", "alarm=yellow", 400, "alarm"),
    ("/beds/alarming-bed/report", "format=docx", 400, "format"),
    ("/beds/alarming-bed/report", "since=2026-11-22T00:00:00Z&until=2026-11-21T00:00:00Z", 400, "until"),
    ("/beds/alarming-bed/report", "since=2026-11-01T00:00:00Z&until=2026-11-21T00:00:00Z", 400, "7"),
    ("/beds/never-seen/report", "", 404, "no stored second"),
    ("/beds/alarming-bed/episodes/12/explain", "", 404, "no alarm episode"),
    ("/beds/alarming-bed/episodes/yesterday/explain", "", 400, "start"),
    ("/beds/bad bed!/report", "", 400, "bed id"),
])
def test_bad_board_requests_get_a_4xx_naming_the_problem(ward, path, query, status, names):
    got, body = get(ward[0], path, query)
    assert got == status and names in body["error"], body


def test_stopped_beds_are_filtered_and_each_signal_carries_its_bedside_limits(ward):
    """Issue #40: the board hides beds that stopped long ago (closed for silence) unless asked, never one with an
    open alarm; and draws each signal's bedside limits."""
    endpoints, scorer = ward
    store = endpoints.engine.store
    endpoints.engine.sweep(now=float(START + 1000 + 3600))  # an hour later: every bed silent, closed
    rows = {bed: last for bed, last, _ in store.board_rows()}
    stopped = {b for b, last in rows.items() if last is None}
    open_alarm = {e["bed"] for e in store.episodes(open_only=True)}
    assert stopped, "the sweep closes silent beds"
    every = {b["bed"] for b in get(endpoints, "/beds", "size=200")[1]["beds"]}
    recording = {b["bed"] for b in get(endpoints, "/beds", "size=200&state=recording")[1]["beds"]}
    shown_stopped = {b["bed"] for b in get(endpoints, "/beds", "size=200&state=stopped")[1]["beds"]}
    assert every == set(rows)
    assert recording == (set(rows) - stopped) | open_alarm
    assert shown_stopped == stopped | open_alarm
    status, body = get(endpoints, "/beds", "state=asleep")
    assert status == 400 and "state" in body["error"] and "recording" in body["error"]
    limits = {s["name"]: s["limits"] for s in get(endpoints, "/beds", "size=1")[1]["signals"]}
    assert {"kind": "hypotension", "op": "<", "threshold": 65.0} in limits["map"]
    assert {(x["kind"], x["threshold"]) for x in limits["hr"]} == {("tachycardia", 120.0), ("bradycardia", 40.0)}
