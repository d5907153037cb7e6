"""A replay is a repeat, whatever happened in between (issue #29, section 5): a gateway that buffered through an
outage re-sends seconds the store already has, after its bed was closed for silence, after the service restarted,
or through Redis; exactly the new seconds are stored, once, and one bed's trouble never refuses the other beds of
the message. On sqlite and on the real PostgreSQL of these machines (which these tests fail without, not skip)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest

from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.redis_path import Consumer, publish
from biostream.serving.streaming.store import Store, sqlite_url
from biostream.serving.streaming.tables import SECONDS
from tests.model.test_stream_redis import redis_prefix  # noqa: F401 (a fixture)
from tests.model.test_streams import START, params
from tests.pipeline.conftest import scratch_database

pytestmark = pytest.mark.services  # the local PostgreSQL and Redis servers


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "streams.db")
    else:
        with scratch_database("biostream_replay") as url:
            yield url


@contextlib.contextmanager
def engines(scorer, url: str, n: int = 1, **over) -> Iterator[list[StreamEngine]]:
    out = [StreamEngine(scorer, Store(url), params(url, **over)) for _ in range(n)]
    try:
        yield out
    finally:
        for e in out:
            e.store.dispose()


def stored_seconds(store: Store, bed: str) -> list[int]:
    return [r["second"] - START for r in store.seconds(bed, limit=10 ** 6)]


def scores(store: Store, bed: str) -> np.ndarray:
    return np.array([r["score"] for r in store.seconds(bed, limit=10 ** 6)])


def closed(store: Store, *beds: str) -> bool:
    """The beds have no recording open (closed for silence)."""
    return all(row.last_second is None for row in store.bed_rows(beds).values())


def steps(consumer: Consumer, entries: int) -> None:
    """Step the consumer until it has processed `entries` entries (at most 50 rounds)."""
    done = 0
    for _ in range(50):
        done += consumer.step()
        if done >= entries:
            return
    raise AssertionError(f"the consumer processed {done} of {entries} entries in 50 rounds")


def test_a_replay_after_silence_stores_exactly_the_new_seconds_and_continues_the_recording(alarming, store_url,
                                                                                            tmp_path):
    """The issue's case: a bed streams 20 s; it is closed after silent_s; its gateway re-sends its buffer, the 20
    seconds stored and 10 new ones, with another bed's new second in the same message (it was a 500 that lost both)."""
    scorer, pid, values = alarming
    with engines(scorer, store_url) as (engine,), engines(scorer, sqlite_url(tmp_path / "again.db")) as (again,):
        engine.ingest([Chunk(pid, START, values[:, :20].copy())], now=1000.0)
        engine.ingest([Chunk("other", START, values[:, :5].copy())], now=1000.0)
        engine.sweep(now=1000.0 + 150)
        assert closed(engine.store, pid, "other")
        answers, problems = engine.ingest([Chunk(pid, START, values[:, :30].copy()),
                                           Chunk("other", START + 5, values[:, 5:6].copy())], now=1160.0)
        assert problems == []
        by_bed = {a.bed: a for a in answers}
        assert by_bed[pid].repeated == 20 and len(by_bed[pid].seconds) == 10
        assert by_bed["other"].repeated == 0 and len(by_bed["other"].seconds) == 1
        assert stored_seconds(engine.store, pid) == list(range(30)), "each second once"
        assert stored_seconds(engine.store, "other") == list(range(6))
        # the new seconds continue the recording from the stored history: the scores of a stream that never stopped
        again.ingest([Chunk(pid, START, values[:, :30].copy())], now=0.0)
        np.testing.assert_allclose(scores(engine.store, pid), scores(again.store, pid), rtol=0, atol=1e-9)
        # and again: the whole buffer is now repeats
        answers, problems = engine.ingest([Chunk(pid, START, values[:, :30].copy())], now=1161.0)
        assert problems == [] and answers[0].repeated == 30 and answers[0].seconds == []


def test_a_replay_after_a_restart_is_a_repeat_beyond_the_history_kept(alarming, store_url):
    """A new process (nothing in memory) gets a buffer longer than the window kept in a bed's state: the seconds
    older than it are repeats too (asked of the store), the new ones stored once; a replayed second that carries a
    value the store does not have, too old to merge, is refused and named, the rest kept."""
    scorer, pid, values = alarming
    w = scorer.spec.window_s
    n = w + 100
    values = np.concatenate([values] * (1 + (n + 12) // values.shape[1]), axis=1)  # long enough
    with engines(scorer, store_url, 2) as (first, restarted):
        first.ingest([Chunk(pid, START, values[:, :n].copy())], now=0.0)
        old = values[:, :n + 10].copy()
        missing = np.argwhere(np.isnan(old[:, :50]))
        answers, problems = restarted.ingest([Chunk(pid, START, old), Chunk("b", START, values[:, :3].copy())],
                                             now=1.0)
        assert problems == []
        assert {a.bed: (a.repeated, len(a.seconds)) for a in answers} == {pid: (n, 10), "b": (0, 3)}
        assert stored_seconds(restarted.store, pid) == list(range(n + 10))
        assert missing.size, "the recording has a missing value early on (synthetic drop-outs)"
        j, t = (int(x) for x in missing[0])
        late = np.full((len(scorer.spec.signals), 1), np.nan)
        late[j, 0] = 70.0 if scorer.spec.signals[j] == "hr" else np.nanmean(values[j])
        answers, problems = restarted.ingest([Chunk(pid, START + int(t), late),
                                              Chunk(pid, START + n + 10, values[:, n + 10:n + 12].copy())], now=2.0)
        assert [p.bed for p in problems] == [pid] and "late_s" in problems[0].limit
        assert len(answers[0].seconds) == 2, "the item's other seconds are kept"
        assert np.isnan(np.frombuffer(restarted.store.stored_values(pid, START + t, START + t)[START + t])[j])


def test_one_bed_the_store_refuses_does_not_cost_the_others_their_seconds(alarming, store_url):
    """A second the store has though the bed's state does not know it (written around the service): that bed's
    seconds are refused and named, the other beds of the message stored; the batch never fails as a whole."""
    scorer, pid, values = alarming
    with engines(scorer, store_url) as (engine,):
        engine.ingest([Chunk(pid, START, values[:, :10].copy())], now=0.0)
        row = engine.store.seconds(pid, limit=1)[0]
        with engine.store.engine.begin() as conn:  # a second 5 s ahead of the bed's newest, behind its back
            conn.execute(SECONDS.insert().values({**row, "second": START + 14}))
        answers, problems = engine.ingest([Chunk(pid, START + 10, values[:, 10:20].copy()),
                                           Chunk("b", START, values[:, :4].copy())], now=1.0)
        assert [(p.bed, p.kept) for p in problems] == [(pid, "the other beds")]
        assert "GET /beds/" in problems[0].error
        assert stored_seconds(engine.store, "b") == list(range(4))
        assert stored_seconds(engine.store, pid) == [*range(10), 14], "nothing of the refused bed's message"


def test_a_replay_through_redis_is_acknowledged_with_exactly_the_new_seconds_stored(alarming, redis_prefix):  # noqa: F811
    """The Redis path: a replay after silence, in one entry with another bed's new second, and an entry whose bed
    the store refuses: every entry is acknowledged (no poison message), each new second stored once."""
    r, prefix = redis_prefix
    scorer, pid, values = alarming

    def item(bed, a, b):
        return {"bed": bed, "start": START + a, "vitals": {
            s: [None if np.isnan(x) else float(x) for x in values[i, a:b]] for i, s in enumerate(scorer.spec.signals)}}

    with scratch_database("biostream_replay_redis") as url:
        consumer = Consumer(StreamEngine(scorer, Store(url), params(url, shards=1)), r, prefix, "c", lease_ms=500)
        store = consumer.engine.store
        publish(r, prefix, [item(pid, 0, 20), item("other", 0, 5)], 1)
        steps(consumer, 1)
        consumer.sweep(now=10 ** 10)
        assert closed(store, pid, "other")
        publish(r, prefix, [item(pid, 0, 30), item("other", 5, 6)], 1)
        steps(consumer, 1)
        assert stored_seconds(store, pid) == list(range(30)) and stored_seconds(store, "other") == list(range(6))
        row = store.seconds("other", limit=1)[0]
        with store.engine.begin() as conn:
            conn.execute(SECONDS.insert().values({**row, "second": START + 8}))
        publish(r, prefix, [item("other", 6, 10), item(pid, 30, 31)], 1)
        steps(consumer, 1)
        assert r.xpending(f"{prefix}:in:0", "score")["pending"] == 0 and r.xlen(f"{prefix}:in:0") == 0
        assert stored_seconds(store, pid) == list(range(31))
        assert stored_seconds(store, "other") == [*range(6), 8]
        store.dispose()


BAD_BEDS = ["x" * 5000, "bed\x00nul", "bed'; DROP TABLE stream_seconds;--", "ｂｅｄ-1", "bed\u202e1", "bed\u200b1",
            " bed", "bed%41", "bed\n1", "*", "bed/../1", ""]
BAD_QUERIES = ["since=-99999999999999999999", "since=99999999999999999999", "until=1e400", "since=nan",
               "since=-1", "limit=1000000000", "limit=0", "limit=-5", "limit=1e3", "limit=%EF%BC%91",
               "bogus=1", "since=1&since=2", "since=" + "9" * 5000]


def test_the_stream_endpoints_answer_bad_times_queries_and_bed_ids_with_a_400_naming_the_problem(alarming, tmp_path):
    """Issue #29's four 500s (huge and negative `since` on /scores and /episodes, `start` 1e300 and -1e20 on
    /ingest) and bed ids that would reach SQL, Redis keys, paths or logs: each a 400 naming the field and the
    form, nothing stored; a good request right after is answered."""
    import json

    from biostream.serving.streaming.http import StreamEndpoints

    scorer, pid, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    with engines(scorer, url) as (engine,):
        http = StreamEndpoints(engine)
        for query in BAD_QUERIES:
            for path in ("/beds/bed-9/scores", "/beds/bed-9/episodes", "/alarms"):
                status, out = http.get_now(path, query)
                assert status == 400 and out["error"], (path, query, out)
        status, out = http.get_now("/beds/bed-9/scores", "since=-99999999999999999999")
        assert "1970" in out["error"] and "since" in out["error"]
        for bed in BAD_BEDS:
            status, out = http.get_now(f"/beds/{bed}/scores", "")
            assert status in (400, 404) and out["error"], (bed, out)
            if "/" not in bed:
                assert status == 400 and "bed id" in out["error"] and "ASCII" in out["error"], (bed, out)
                assert len(out["error"]) < 400, "a long id is not echoed whole"
            body = json.dumps({"samples": [{"bed": bed, "start": START, "vitals": {"hr": [72]}}]}).encode()
            status, out = http.ingest_now(body)
            assert status == 400 and [p["field"] for p in out["problems"]] == ["bed"], (bed, out)
        for start in (1e300, -99999999999999999999, 99999999999999999999, -1, "9999-12-31T23:59:60Z"):
            body = json.dumps({"samples": [{"bed": "bed-9", "start": start, "vitals": {"hr": [72]}}]}).encode()
            status, out = http.ingest_now(body)
            assert status == 400 and [p["field"] for p in out["problems"]] == ["start"], (start, out)
        assert engine.store.count_seconds() == 0, "no second stored from a refusal"
        # issue #39: a bed whose data are refused is not a calm bed: the condition "no valid data", open
        assert [(b.bed, b.last_second) for b in engine.store.beds()] == [("bed-9", None)]
        [condition] = engine.store.episodes("bed-9", open_only=True)
        assert condition["alarm_class"] == "technical" and condition["reason"].startswith("no valid data from this bed")
        arrow = _arrow_rows(scorer.spec, ["bed-9", "bed\x00", "ok-1"], [START, START, 1e300])
        status, out = http.ingest_now(arrow, "application/vnd.apache.arrow.stream")
        assert status == 200 and [p["field"] for p in out["problems"]] == ["bed", "time"], out
        assert [b["bed"] for b in out["beds"]] == ["bed-9"]
        status, out = http.get_now("/beds/bed-9/scores", "since=0&limit=10")
        assert status == 200 and len(out["seconds"]) == 1
        assert not engine.store.episodes("bed-9", open_only=True), "its data read again: the condition ended"
        assert [e["bed"] for e in engine.store.episodes(open_only=True)] == ["ok-1"], "a bad time refuses ok-1's"


def _arrow_rows(spec, beds, times) -> bytes:
    import pyarrow as pa

    cols = {"bed": pa.array(beds), "time": pa.array(times, pa.float64()),
            "hr": pa.array([72.0] * len(beds), pa.float64())}
    sink = pa.BufferOutputStream()
    table = pa.table(cols)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()
