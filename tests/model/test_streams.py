"""Bedside streams (biostream.serving.streaming) on a fitted detector: a recording streamed second by second gets what
`score_series` gives it whole; repeats, late and out-of-range values, gaps, silence and restarts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from biostream.core.params import DEFAULT_MONITOR
from biostream.serving.database.retention import DEFAULT_RETENTION
from biostream.serving.streaming.answers import Outgoing
from biostream.serving.streaming.engine import Chunk, StreamEngine, StreamParams
from biostream.serving.streaming.store import Store, sqlite_url

START = int(datetime(2026, 11, 21, 8, tzinfo=UTC).timestamp())


def params(store: str, **over) -> StreamParams:
    """The stream settings of these tests. Most tests give the engine a wall clock of their own (`now`: small
    numbers, to drive silence) beside data seconds of 2026, so no second is refused as ahead of that clock
    (`max_skew_s`) unless a test asks (tests/model/test_hostile.py)."""
    base = dict(store=store, late_s=60, silent_s=120, max_message_s=3600, max_message_beds=4000,
                max_message_bed_s=240000, max_skew_s=10 ** 10, state_cache_mb=512, ack_silence_s=120,
                ack_worsening=1.0, redis_url=None, shards=4, retention=DEFAULT_RETENTION, monitor=DEFAULT_MONITOR)
    return StreamParams(**{**base, **over})


def series_answer(scorer, pid, values):
    from biostream.serving import Schemas

    body = {"patient_id": pid, "start": datetime.fromtimestamp(START, UTC).isoformat(),
            "vitals": {s: [None if np.isnan(v) else float(v) for v in values[i]]
                       for i, s in enumerate(scorer.spec.signals)}}
    return scorer.score_series(Schemas(scorer.spec).Series.model_validate_json(json.dumps(body)))


def stored_view(store: Store, bed: str, n: int):
    """Scores, per-second alarm and class as the store has them: an episode's seconds are alarm seconds."""
    rows = store.seconds(bed, limit=10 ** 6)
    assert [r["second"] for r in rows] == list(range(START, START + n)), "every second stored once, in order"
    alarm = [False] * n
    cls = [None] * n
    episodes = store.episodes(bed)
    for e in episodes:
        assert e["end"] is not None, "closed at the end of the stream"
        for t in range(e["start"], e["end"]):
            alarm[t - START], cls[t - START] = True, e["alarm_class"]
    return np.array([r["score"] for r in rows]), alarm, cls, episodes


def assert_same_as_series(store, bed, want, n):
    scores, alarm, cls, episodes = stored_view(store, bed, n)
    np.testing.assert_allclose(scores, want.scores, rtol=0, atol=1e-6)
    assert alarm == want.alarm
    assert cls == want.alarm_class
    got = [(e["start"] - START, e["end"] - START, e["alarm_class"], e["peak_second"] - START,
            json.loads(e["signals"])) for e in episodes]
    expect = [(int(e.start.timestamp()) - START, int(e.end.timestamp()) - START, e.alarm_class,
               int(e.peak_time.timestamp()) - START, e.signals) for e in want.episodes]
    assert got == expect
    np.testing.assert_allclose([e["peak_score"] for e in episodes], [e.peak_score for e in want.episodes],
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("chunking", ["second by second", "stretches of 1 to 90 s"])
def test_a_streamed_recording_gets_what_score_series_gives(alarming, tmp_path, chunking):
    scorer, pid, values = alarming
    want = series_answer(scorer, pid, values)
    assert want.episodes, "the stretch must alarm for this test to compare episodes"
    store = Store(sqlite_url(tmp_path / "streams.db"))
    engine = StreamEngine(scorer, store, params(store.url))
    n = values.shape[1]
    rng = np.random.default_rng(0)
    a = 0
    while a < n:
        m = 1 if chunking == "second by second" else int(rng.integers(1, 91))
        engine.ingest([Chunk(pid, START + a, values[:, a:a + m].copy())], now=float(a))
        a += m
    engine.close([pid])
    assert_same_as_series(store, pid, want, n)


def test_a_restarted_process_resumes_every_bed_from_the_store(alarming, tmp_path):
    """Two processes (engines) over one store take turns on the same beds, and one restarts mid-stream: each
    picks up the other's state (its version is newer), and the result is the uninterrupted stream's."""
    scorer, pid, values = alarming
    want = series_answer(scorer, pid, values)
    url = sqlite_url(tmp_path / "streams.db")
    engines = [StreamEngine(scorer, Store(url), params(url)) for _ in range(2)]
    n = values.shape[1]
    for a in range(0, n, 50):
        k = (a // 50) % 2
        if a == 700:
            engines[k] = StreamEngine(scorer, Store(url), params(url))  # a restart: nothing in memory
        engines[k].ingest([Chunk(pid, START + a, values[:, a:a + 50].copy())], now=float(a))
    engines[0].close([pid])
    assert_same_as_series(engines[0].store, pid, want, n)


def test_repeats_late_values_gaps_and_ranges(alarming, tmp_path):
    scorer, pid, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    engine = StreamEngine(scorer, Store(url), params(url, late_s=30))
    v = values[:, :200].copy()
    # a signal and a second with a reading (synthetic drop-outs)
    hr, at = next((j, t) for t in range(159, 130, -1) for j in range(len(v)) if not np.isnan(v[j, t]))
    held = v[hr, at]
    v[hr, at] = v[hr, 120] = np.nan  # arrive late: within late_s (at), and too late (120)
    engine.ingest([Chunk("b", START, v[:, :160].copy())], now=0.0)
    # a repeat of stored seconds is a no-op; the late hr value of second `at` is merged; 120's is too late
    late = np.full((len(scorer.spec.signals), 1), np.nan)
    late[hr, 0] = held
    old = v[:, 100:101].copy()
    old[hr, 0] = held
    answers, problems = engine.ingest([Chunk("b", START + 100, v[:, 100:120].copy()),
                                       Chunk("b", START + at, late), Chunk("b", START + 120, old)], now=1.0)
    assert answers[0].repeated == 20 and answers[0].merged == 1 and answers[0].seconds == []
    assert len(problems) == 1 and problems[0].field == "start" and "late_s" in problems[0].limit
    assert "1 second(s) of bed 'b'" in problems[0].error and problems[0].kept == "the item's other seconds"
    stored = {r["second"]: np.frombuffer(r["vals"]) for r in engine.store.seconds("b", limit=1000)}
    assert stored[START + at][hr] == held and len(stored) == 160
    # a gap shorter than silent_s is missing data, scored; a longer one starts a new recording
    answers, _ = engine.ingest([Chunk("b", START + 170, v[:, 170:171].copy())], now=2.0)
    assert [s["time"] for s in answers[0].seconds][0] == datetime.fromtimestamp(START + 160, UTC).isoformat() \
        .replace("+00:00", "Z")
    assert len(answers[0].seconds) == 11
    gap = np.frombuffer(engine.store.seconds("b", since=START + 165, until=START + 166)[0]["vals"])
    assert np.isnan(gap).all()
    answers, _ = engine.ingest([Chunk("b", START + 171 + 500, v[:, 171:172].copy())], now=3.0)
    assert len(answers[0].seconds) == 1, "a gap over silent_s: a new recording, the gap is not scored"


def test_a_silent_bed_is_closed_and_its_episode_ends(alarming, tmp_path):
    scorer, pid, values = alarming
    want = series_answer(scorer, pid, values)
    first = want.episodes[0]
    end = int(first.end.timestamp()) - START  # stop while the first episode is open
    url = sqlite_url(tmp_path / "streams.db")
    engine = StreamEngine(scorer, Store(url), params(url))
    engine.ingest([Chunk(pid, START, values[:, :end].copy())], now=1000.0)
    open_ = engine.store.episodes(open_only=True)
    assert [e["start"] for e in open_] == [int(first.start.timestamp())]
    assert engine.sweep(now=1000.0 + 119) == [], "not yet silent for silent_s"
    closed = engine.sweep(now=1000.0 + 121)
    assert [c["end"] for c in closed] == [first.end.isoformat().replace("+00:00", "Z")]
    assert engine.store.episodes(open_only=True) == []
    # its next message continues the recording if it follows the stored seconds by less than silent_s (a gateway
    # replaying its buffer: the gap is scored as missing data), else starts a new one: nothing before it is read
    answers, _ = engine.ingest([Chunk(pid, START + end + 5, values[:, :1].copy())], now=1200.0)
    assert len(answers[0].seconds) == 6
    engine.sweep(now=1200.0 + 121)
    answers, _ = engine.ingest([Chunk(pid, START + end + 5 + 121, values[:, :1].copy())], now=1400.0)
    assert len(answers[0].seconds) == 1


def test_a_ward_falling_silent_together_is_closed_a_step_at_a_time_longest_silent_first(alarming, tmp_path):
    """Five beds fall silent (their last messages 1,000-1,004 s); a sweep of step 2 closes the two silent longest,
    says more wait, and the next sweeps close the rest: never every bed in one transaction. The HTTP sweeper takes
    every step in one call, letting its lock go between them."""
    from biostream.serving.streaming.http import StreamEndpoints

    scorer, _, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    engine = StreamEngine(scorer, Store(url), params(url))
    for i in range(5):
        engine.ingest([Chunk(f"bed-{i}", START, values[:, :30].copy())], now=1000.0 + i)
    recording = lambda: sorted(b.bed for b in engine.store.beds() if b.last_second is not None)  # noqa: E731
    engine.sweep(now=1500.0, step=2)
    assert recording() == ["bed-2", "bed-3", "bed-4"] and engine.more_silent
    engine.sweep(now=1500.0, step=2)
    assert recording() == ["bed-4"] and engine.more_silent
    engine.sweep(now=1500.0, step=2)
    assert recording() == [] and not engine.more_silent
    reads = []  # the beds whose history is read back from the store
    recent_values = engine.store.recent_values
    engine.store.recent_values = lambda bed, *a: reads.append(bed) or recent_values(bed, *a)
    for i in range(5):  # a new recording each (more than silent_s later): nothing before it is read
        engine.ingest([Chunk(f"bed-{i}", START + 1000, values[:, :30].copy())], now=2000.0)
    assert reads == []
    import biostream.serving.streaming.engine as engine_module

    step, engine_module.CLOSE_STEP = engine_module.CLOSE_STEP, 2
    try:
        StreamEndpoints(engine).sweep_now(now=2500.0)
    finally:
        engine_module.CLOSE_STEP = step
    assert recording() == [] and not engine.more_silent
    # a bed back within silent_s of its newest stored second continues its recording: its history is read, once
    engine.ingest([Chunk("bed-0", START + 1030 + 60, values[:, :10].copy())], now=2600.0)
    assert reads == ["bed-0"] and recording() == ["bed-0"]
    assert len(engine.store.seconds("bed-0", since=START + 1000)) == 30 + 60 + 10  # the 60 s gap scored as missing


def test_a_batch_result_is_kept_in_its_commit_until_it_is_published(alarming, tmp_path):
    """The store's outbox (the Redis path publishes from it): a batch's message is written with its seconds, and
    handed out again until a publisher says it is out."""
    scorer, pid, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    engine = StreamEngine(scorer, Store(url), params(url))
    out = Outgoing(lambda answers, problems: json.dumps([a.to_dict() for a in answers]))
    answers, _ = engine.ingest([Chunk(pid, START, values[:, :30].copy())], now=1000.0, outgoing=out)
    assert out.id is not None and json.loads(out.message) == json.loads(json.dumps([a.to_dict() for a in answers]))
    store = engine.store
    with store.unpublished(before=1000.0) as rows:
        assert rows == [], "committed at 1000.0: not before it"
    with pytest.raises(RuntimeError), store.unpublished(before=1001.0) as rows:
        assert rows == [(out.id, out.message)]
        raise RuntimeError("the publisher failed")
    with store.unpublished(before=1001.0) as rows:
        assert rows == [(out.id, out.message)], "kept: its publish failed"
    with store.unpublished(before=1001.0) as rows:
        assert rows == [], "published: deleted"
    first = Outgoing(out.render)
    engine.ingest([Chunk(pid, START + 30, values[:, 30:31].copy())], now=1002.0, outgoing=first)
    second = Outgoing(out.render, published=[first.id])  # a consumer's next commit deletes what it published
    engine.ingest([Chunk(pid, START + 31, values[:, 31:32].copy())], now=1003.0, outgoing=second)
    with pytest.raises(RuntimeError), store.unpublished(before=2000.0) as rows:
        assert rows == [(second.id, second.message)]
        raise RuntimeError("kept")
    store.published([second.id])  # ... or at once, when it has nothing more to commit
    with store.unpublished(before=2000.0) as rows:
        assert rows == []


def test_messages_name_bed_field_value_and_limit_and_keep_the_rest(alarming):
    from biostream.serving.streaming.messages import MessageError, parse_json

    scorer, _, _ = alarming
    spec, p = scorer.spec, params("sqlite://")
    body = {"samples": [
        {"bed": "ok", "start": "2026-11-21T08:00:00Z", "vitals": {"hr": [70, 71], "map": [80, None]}},
        {"bed": "range", "start": START, "vitals": {"hr": [70, 400]}},
        {"bed": "lengths", "start": START, "vitals": {"hr": [70, 71], "map": [80]}},
        {"bed": "signal", "start": START, "vitals": {"pulse": [70]}},
        {"bed": "time", "start": "10:15", "vitals": {"hr": [70]}},
        {"bed": "text", "start": START, "vitals": {"hr": ["70"]}},
        {"bed": 4, "start": START, "vitals": {"hr": [70]}},
        {"bed": "long", "start": START, "vitals": {"hr": [70] * 3601}},
    ]}
    chunks, problems = parse_json(json.dumps(body).encode(), spec, p)
    assert [c.bed for c in chunks] == ["ok", "range"]
    assert np.isnan(chunks[1].values[spec.signals.index("hr"), 1]), "the out-of-range value only is dropped"
    assert chunks[1].values[spec.signals.index("hr"), 0] == 70
    got = {(x.bed, x.field): x for x in problems}
    assert got[("range", "vitals.hr[1]")].value == 400 and got[("range", "vitals.hr[1]")].kept == "stored as missing"
    assert "[20, 250]" in got[("range", "vitals.hr[1]")].limit
    assert got[("lengths", "vitals")].kept == "nothing of this item"
    assert "unknown signal(s) pulse" in got[("signal", "vitals.pulse")].error
    assert got[("time", "start")].value == "10:15" and "ISO 8601" in got[("time", "start")].limit
    assert got[("text", "vitals.hr[0]")].value == "70"
    assert got[(None, "bed")].value == 4
    assert got[("long", "vitals")].value == 3601 and "stream.max_message_s" in got[("long", "vitals")].limit
    for bad in (b"not json", b'{"windows": []}', json.dumps({"samples": [{}] * 4001}).encode()):
        with pytest.raises(MessageError):
            parse_json(bad, spec, p)


def test_the_usual_message_is_read_at_once_with_what_item_by_item_reading_gives(alarming):
    """`_usual_items` (every item's values checked and converted at once) and `parse_item` (one by one, each
    problem named) give the same chunks; an item the fast path does not take sends the whole message item by
    item, and a value JSON numbers cannot carry (NaN, infinity, true, a huge integer) is named, never kept."""
    from biostream.serving.streaming import messages as m

    scorer, _, values = alarming
    spec, p = scorer.spec, params("sqlite://")
    sig = list(spec.signals)
    usual = [
        {"bed": "all", "start": START, "vitals": {s: [None if np.isnan(x) else float(x)] for s, x in
                                                  zip(sig, values[:, 0], strict=True)}},
        {"bed": "some", "start": float(START) + 0.4, "vitals": {"map": [80, None, 81], "hr": [70, 71, 72]}},
        {"bed": "ints", "start": START + 3, "vitals": {"hr": [70, 400], "spo2": [None, 97]}},
    ]
    fast = m._usual_items(usual, spec, p)
    assert fast is not None, "the usual message takes the fast path"
    slow = [m.parse_item(item, k, spec, p) for k, item in enumerate(usual)]
    for a, b in zip(fast, slow, strict=True):
        assert (a.bed, a.start, a.index) == (b.bed, b.start, b.index)
        np.testing.assert_array_equal(a.values, b.values)
    chunks, problems = m.parse_json(json.dumps({"samples": usual}).encode(), spec, p)
    assert [(x.bed, x.field) for x in problems] == [("ints", "vitals.hr[1]")], "ranges are checked after both"
    for bad, field in (("NaN", "vitals.hr[0]"), ("Infinity", "vitals.hr[0]"), ("true", "vitals.hr[0]"),
                       ("1" + "0" * 400, "vitals.hr[0]"), ('"72"', "vitals.hr[0]")):
        text = json.dumps({"samples": usual}).replace('"hr": [70, 71, 72]', f'"hr": [70, {bad}, 72]')
        text = text.replace('"hr": [70, 400]', f'"hr": [{bad}, 400]')
        body = json.loads(text)
        assert m._usual_items(body["samples"], spec, p) is None, f"{bad} sends the message item by item"
        chunks, problems = m.parse_json(text.encode(), spec, p)
        assert [c.bed for c in chunks] == ["all"], bad
        assert {(x.bed, x.field) for x in problems} == {("some", "vitals.hr[1]"), ("ints", field)}, bad
        np.testing.assert_array_equal(chunks[0].values, fast[0].values)


def test_arrow_messages_carry_the_same_seconds(alarming):
    import pyarrow as pa

    from biostream.serving.streaming.arrow_rows import parse_arrow
    from biostream.serving.streaming.messages import parse_json

    scorer, _, values = alarming
    spec, p = scorer.spec, params("sqlite://")
    beds = ["a", "a", "a", "b"]
    times = [START, START + 1, START + 2, START]
    cols = {"bed": pa.array(beds), "time": pa.array(times, pa.float64())}
    for i, s in enumerate(spec.signals):
        cols[s] = pa.array(values[i, :4], pa.float32())
    sink = pa.BufferOutputStream()
    table = pa.table(cols)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    chunks, problems = parse_arrow(sink.getvalue().to_pybytes(), spec, p)
    assert problems == []
    assert [(c.bed, c.start, c.values.shape[1]) for c in chunks] == [("a", START, 3), ("b", START, 1)]
    body = {"samples": [{"bed": "a", "start": START, "vitals": {
        s: [None if np.isnan(x) else float(np.float32(x)) for x in values[i, :3]]
        for i, s in enumerate(spec.signals)}}]}
    same, _ = parse_json(json.dumps(body).encode(), spec, p)
    np.testing.assert_array_equal(same[0].values, chunks[0].values)


def test_a_bed_written_by_another_process_meanwhile_is_scored_again(alarming, tmp_path):
    """Process a scores a bed's seconds while process b writes some of them: a's commit finds the bed's version
    moved, reloads it and scores again; every second is stored once, with the uninterrupted stream's score."""
    scorer, pid, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    a, b = (StreamEngine(scorer, Store(url), params(url)) for _ in range(2))
    a.ingest([Chunk(pid, START, values[:, :100].copy())], now=0.0)
    score, raced = a._score, []

    def racing(plans, now):
        if not raced:
            raced.append(b.ingest([Chunk(pid, START + 100, values[:, 100:110].copy())], now=now))
        return score(plans, now)

    a._score = racing
    answers, _ = a.ingest([Chunk(pid, START + 100, values[:, 100:120].copy())], now=1.0)
    assert raced and answers[0].repeated == 10 and len(answers[0].seconds) == 10
    want = series_answer(scorer, pid, values[:, :120])
    rows = a.store.seconds(pid, limit=1000)
    assert [r["second"] for r in rows] == list(range(START, START + 120))
    np.testing.assert_allclose([r["score"] for r in rows], want.scores, rtol=0, atol=1e-6)


def _arrow(beds, times, values, spec) -> bytes:
    import pyarrow as pa

    cols = {"bed": pa.array(beds, pa.string()), "time": pa.array(times, pa.float64())}
    for i, s in enumerate(spec.signals):
        cols[s] = pa.array(values[i], pa.float64())
    sink = pa.BufferOutputStream()
    table = pa.table(cols)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_arrow_rows_in_any_order_are_the_stream_of_the_ordered_rows(alarming, tmp_path):
    """A gateway's rows shuffled, one sent twice, with a row of no bed and one of an infinite value: the same
    seconds stored as from the rows in order, and the two bad rows named (nothing else refused)."""
    from biostream.serving.streaming.arrow_rows import parse_arrow

    scorer, _, values = alarming
    spec, n = scorer.spec, 40
    beds = ["a"] * n + ["b"] * n
    times = [START + j for j in range(n)] * 2
    vals = np.concatenate([values[:, :n], values[:, 100:100 + n]], axis=1)
    rng = np.random.default_rng(3)
    order = list(rng.permutation(2 * n)) + [5]  # shuffled, and row 5 once more
    bad = np.full((len(spec.signals), 2), 80.0)
    bad[0, 1] = np.inf
    shuffled = _arrow([beds[k] for k in order] + [None, "b"], [times[k] for k in order] + [START, START + n],
                      np.concatenate([vals[:, order], bad], axis=1), spec)
    stores = {}
    for name, body in (("ordered", _arrow(beds, times, vals, spec)), ("shuffled", shuffled)):
        chunks, problems = parse_arrow(body, spec, params("sqlite://"))
        if name == "shuffled":
            assert [(p.index, p.field) for p in problems] == [(2 * n + 1, "bed"), (2 * n + 2, "values")], problems
        else:
            assert problems == []
        store = stores[name] = Store(sqlite_url(tmp_path / f"{name}.db"))
        StreamEngine(scorer, store, params(store.url)).ingest(chunks, now=START + n)
    for bed in ("a", "b"):
        got, want = stores["shuffled"].seconds(bed), stores["ordered"].seconds(bed)
        assert [r["second"] for r in got] == list(range(START, START + n))
        assert [(r["vals"], r["score"]) for r in got] == [(r["vals"], r["score"]) for r in want]
