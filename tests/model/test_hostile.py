"""Issue #39, in process over real stores: no gateway, careless or hostile, can silence a bed or bring a worker down.
A second dated a year ahead is refused and the bed's next seconds alarm as a control bed's; a bed whose data are
refused shows the condition "no valid data"; an acknowledgement lapses and a worsening alarms again; a gateway key
writes only its beds; a message's memory is bounded (windows scored a piece at a time, an Arrow stream sized before
it is decoded, problems listed to 100 and counted); a gateway's answers are strict JSON. The same cases over HTTP
against the served bento: tests/pipeline/test_hostile.py."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pyarrow as pa
import pytest

from biostream.serving.streaming.answers import MAX_PROBLEMS, Chunk
from biostream.serving.streaming.arrow_rows import parse_arrow
from biostream.serving.streaming.engine import StreamEngine
from biostream.serving.streaming.http import StreamEndpoints
from biostream.serving.streaming.messages import MessageError, parse_json
from biostream.serving.streaming.store import Store, sqlite_url
from tests.model.conftest import scorer_for
from tests.model.test_streams import params

NORMAL = {"hr": 75.0, "spo2": 97.0, "sbp": 120.0, "dbp": 70.0, "map": 85.0, "rr": 14.0, "temp": 37.0, "etco2": 38.0}


LOW = {"map": 55.0, "sbp": 81.0, "dbp": 42.0}  # a hypotension (MAP = DBP + (SBP - DBP) / 3)
LOWER = {"map": 40.0, "sbp": 60.0, "dbp": 30.0}


def vitals(scorer, n: int, seed: int = 0, **level: float) -> np.ndarray:
    """(S, n) values of a patient with a little beat-to-beat noise (constant values would be a frozen sensor), at
    NORMAL but for the signals of `level`."""
    noise = np.random.default_rng(seed).normal(0, 0.6, (len(scorer.spec.signals), n))
    base = np.array([[level.get(s, NORMAL.get(s, np.nan))] for s in scorer.spec.signals], dtype=np.float64)
    return np.round(base + noise, 1)


def ramp(scorer, n: int, start: dict, end: dict, seed: int = 1) -> np.ndarray:
    """(S, n) values going linearly from the levels `start` to `end` (with noise)."""
    out = vitals(scorer, n, seed)
    for s in end:
        i = scorer.spec.signals.index(s)
        out[i] += np.linspace(start.get(s, NORMAL[s]), end[s], n) - NORMAL[s]
    return out


@pytest.fixture(scope="module")
def rules(fitted, model_data, configs):
    """The bedside rules with the technical checks: what the served champion alarms with (its learned detector's
    threshold is +inf on the real recordings)."""
    return scorer_for(fitted["clinical"], model_data, configs)


@pytest.fixture
def endpoints(rules, tmp_path):
    scorer = rules
    url = sqlite_url(tmp_path / "streams.db")
    engine = StreamEngine(scorer, Store(url), params(url, max_skew_s=60))
    yield StreamEndpoints(engine)
    engine.store.dispose()


def stored(store: Store, bed: str) -> list[tuple]:
    return [(r["second"], r["score"], r["alarm"]) for r in store.seconds(bed, limit=10 ** 6)]


def signal_episodes(store: Store, bed: str) -> list[tuple]:
    return [(e["start"], e["end"], e["alarm_class"], e["peak_score"]) for e in store.episodes(bed)
            if e["reason"] is None]


def test_a_second_a_year_ahead_is_refused_and_the_bed_alarms_as_a_control_bed(endpoints):
    """The issue's case 2: one second dated now + 365 d, then 250 s of MAP 45: the second is refused (a 4xx-worthy
    problem naming the skew), the bed shows 'no valid data' meanwhile, and its next seconds are scored and alarm
    exactly as a control bed's fed the same seconds."""
    engine, scorer = endpoints.engine, endpoints.engine.scorer
    now = float(int(time.time()))
    start = int(now) - 2100
    deep = {"map": 45.0, "sbp": 70.0, "dbp": 33.0}
    calm = vitals(scorer, 1850)
    low = np.concatenate([ramp(scorer, 100, NORMAL, deep), vitals(scorer, 150, 2, **deep)], axis=1)
    for bed in ("attacked", "control"):
        engine.ingest([Chunk(bed, start, calm.copy())], now=now - 250)
    answers, problems = engine.ingest([Chunk("attacked", int(now) + 365 * 86400, calm[:, :1].copy())], now=now - 249)
    assert not answers and len(problems) == 1 and problems[0].refused
    assert "ahead of the server's clock" in problems[0].error and "max_skew_s = 60" in problems[0].error
    [condition] = [e for e in engine.store.episodes("attacked", open_only=True) if e["reason"]]
    assert condition["alarm_class"] == "technical" and "ahead of the server's clock" in condition["reason"]
    assert engine.store.bed_rows(["attacked"])["attacked"].last_second == start + 1849, "never its newest second"
    for bed in ("attacked", "control"):
        engine.ingest([Chunk(bed, start + 1850, low.copy())], now=now)
    assert stored(engine.store, "attacked") == stored(engine.store, "control")
    assert signal_episodes(engine.store, "attacked") == signal_episodes(engine.store, "control")
    assert any(e[2] == "physiological" for e in signal_episodes(engine.store, "control")), \
        signal_episodes(engine.store, "control")
    assert not [e for e in engine.store.episodes("attacked", open_only=True) if e["reason"]], "data again: it ended"


def test_a_bed_whose_data_are_all_refused_shows_no_valid_data_until_they_come_again(endpoints):
    engine = endpoints.engine
    now = time.time()
    body = json.dumps({"samples": [{"bed": "icu-1", "start": int(now) + 3600, "vitals": {"hr": [72, 73]}},
                                   {"bed": "icu-2", "start": "tomorrow", "vitals": {"hr": [72]}}]}).encode()
    status, out = endpoints.ingest_now(body)
    assert status == 400 and all(p["refused"] for p in out["problems"]) and out["problems_total"] == 2
    status, alarms = endpoints.get_now("/alarms", "")
    assert status == 200 and sorted(a["bed"] for a in alarms["open"]) == ["icu-1", "icu-2"]
    assert all(a["alarm_class"] == "technical" and a["reason"].startswith("no valid data from this bed")
               for a in alarms["open"])
    status, board = endpoints.get_now("/beds", "alarm=technical")
    assert status == 200 and board["total"] == 2 and board["beds"][0]["alarm"]["check"].startswith("no valid data")
    # a refusal again refreshes the same condition, not a new one
    endpoints.ingest_now(body)
    assert len(engine.store.episodes("icu-1")) == 1
    # icu-1's gateway fixes its clock: the condition ends; icu-2 stays silent: its condition ends silent_s later
    good = json.dumps({"samples": [{"bed": "icu-1", "start": int(now) - 5, "vitals": {"hr": [72] * 5}}]}).encode()
    assert endpoints.ingest_now(good)[0] == 200
    assert [a["bed"] for a in endpoints.get_now("/alarms", "")[1]["open"]] == ["icu-2"]
    # the case report names the condition; there is no window of the signals to explain
    [ended] = engine.store.episodes("icu-1")
    period = f"format=text&since={int(now) - 600}&until={int(now) + 60}"
    status, report = endpoints.get_now("/beds/icu-1/report", period)
    assert status == 200 and b"technical condition" in report.body and b"no valid data from this bed" in report.body
    status, out = endpoints.get_now(f"/beds/icu-1/episodes/{ended['start']}/explain", "")
    assert status == 404 and "nothing to explain" in out["error"]
    engine.sweep(now=now + engine.params.silent_s + 5)
    assert endpoints.get_now("/alarms", "")[1]["open"] == []
    ended = engine.store.episodes("icu-2")[0]
    assert ended["end"] is not None and ended["reason"].startswith("no valid data")


def test_an_acknowledgement_lapses_and_a_worsening_alarms_again(endpoints):
    """The issue's case 9 (IEC 60601-1-8: an acknowledgement silences for a limited time): acknowledged at MAP 55,
    the alarm stays acknowledged while it holds; MAP 40 (the rules' score from ~2 to ~5) alarms again at once; a
    second acknowledgement lapses after stream.ack_silence_s (120 s) while the episode is still open."""
    engine, scorer = endpoints.engine, endpoints.engine.scorer
    t = int(time.time()) - 3000  # data seconds; the clock below is the data's, a second after each chunk's last

    def send(first: int, values: np.ndarray) -> None:
        engine.ingest([Chunk("bed-7", t + first, values)], now=float(t + first + values.shape[1]))

    send(0, vitals(scorer, 1620))
    send(1620, ramp(scorer, 180, NORMAL, LOW))
    send(1800, vitals(scorer, 120, 2, **LOW))
    [ep] = engine.store.episodes("bed-7", open_only=True)
    assert ep["alarm_class"] == "physiological" and 1.5 < ep["peak_score"] < 2.8, ep
    status, out = endpoints.acknowledge_now("bed-7", str(ep["start"]), "k_nurse", now=t + 1921)
    assert status == 200 and out["changed"] and out["episode"]["acknowledged_by"] == "k_nurse"
    status, again = endpoints.acknowledge_now("bed-7", str(ep["start"]), "k_other", now=t + 1922)
    assert again["episode"]["acknowledged_by"] == "k_nurse" and not again["changed"], "a repeat changes nothing"
    send(1920, vitals(scorer, 30, 3, **LOW))
    assert engine.store.episodes("bed-7", open_only=True)[0]["acked_by"] == "k_nurse", "the same, still held"
    send(1950, ramp(scorer, 20, LOW, LOWER))
    send(1970, vitals(scorer, 40, 6, **LOWER))  # the rule's score is its exceedance held for its 60 s
    assert engine.store.episodes("bed-7", open_only=True)[0]["acked_by"] == "k_nurse", "not yet worse by a unit"
    send(2010, vitals(scorer, 20, 7, **LOWER))  # MAP 40 for 60 s: 5 mmHg units beyond 65, from ~2
    [ep] = engine.store.episodes("bed-7", open_only=True)
    assert ep["peak_score"] > 4.0 and ep["acked_at"] is None, ("worse: it alarms again", ep)
    assert ep["realarm_why"] == "worsened" and ep["realarmed_at"] == t + 2030
    assert endpoints.acknowledge_now("bed-7", str(ep["start"]), "k_nurse", now=t + 2031)[1]["changed"]
    send(2030, vitals(scorer, 100, 4, **LOWER))
    assert engine.store.episodes("bed-7", open_only=True)[0]["acked_by"] == "k_nurse", "100 s on: still held"
    send(2130, vitals(scorer, 30, 5, **LOWER))
    [ep] = engine.store.episodes("bed-7", open_only=True)
    assert ep["acked_at"] is None and ep["realarm_why"] == "lapsed", ("still open after ack_silence_s", ep)


def test_a_gateway_key_writes_only_its_beds(endpoints):
    now = int(time.time())
    body = json.dumps({"samples": [{"bed": b, "start": now - 10, "vitals": {"hr": [72]}}
                                   for b in ("icu3-1", "icu3-2", "or1-1")]}).encode()
    audit: dict = {}
    status, out = endpoints.ingest_now(body, beds=("icu3-",), audit=audit)
    assert status == 200 and [b["bed"] for b in out["beds"]] == ["icu3-1", "icu3-2"]
    assert [(p["bed"], p["field"], p["refused"]) for p in out["problems"]] == [("or1-1", "bed", False)]
    assert "not one this key may write" in out["problems"][0]["error"]
    assert audit == {"detail": "2 beds: icu3-1, icu3-2"}, "the trail names the beds written"
    assert endpoints.engine.store.episodes("or1-1") == [], "another gateway's bed gets no condition from this key"
    only = json.dumps({"samples": [{"bed": "or1-1", "start": now - 9, "vitals": {"hr": [72]}}]}).encode()
    status, out = endpoints.ingest_now(only, beds=("icu3-",))
    assert status == 403 and "icu3-" in out["error"]


def _arrow(n: int, bed=None, compression="zstd", signals=("hr",)) -> bytes:
    cols = {"bed": pa.array([bed] * n, type=pa.string()), "time": pa.array(np.full(n, 1.8e9))}
    for s in signals:
        cols[s] = pa.array(np.full(n, 72.0))
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_message_is_sized_before_it_is_decoded_and_its_problems_listed_to_100(rules):
    """The issue's case 4: 1.5 M rows of a null bed in 3 kB of zstd answered 556 MB of JSON after 17 s; now 413
    before anything is decompressed. Within the limits, 100 problems are listed and the rest counted."""
    scorer = rules
    p = params("sqlite://", max_message_bed_s=240_000)
    bomb = _arrow(1_500_000)
    assert len(bomb) < 20_000
    began = time.perf_counter()
    with pytest.raises(MessageError) as info:
        parse_arrow(bomb, scorer.spec, p)
    assert info.value.status == 413 and "1500000 bed-seconds" in str(info.value)
    assert "max_message_bed_s" in str(info.value)
    assert time.perf_counter() - began < 1.0, "refused from its metadata, not decoded"
    chunks, problems = parse_arrow(_arrow(200_000), scorer.spec, p)
    assert chunks == [] and len(problems) == MAX_PROBLEMS and problems.total == 200_000
    assert len(json.dumps(problems.to_list())) < 100_000
    many = _arrow(100_000, bed=None)  # distinct beds beyond max_message_beds: 413
    table = pa.ipc.open_stream(many).read_all()
    table = table.set_column(0, "bed", pa.array([f"b{i}" for i in range(100_000)]))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(MessageError, match="100000 beds in one message; at most 4000") as info:
        parse_arrow(sink.getvalue().to_pybytes(), scorer.spec, p)
    assert info.value.status == 413
    values = json.dumps({"samples": [{"bed": f"b{i}", "start": 1.8e9, "vitals": {"hr": [72] * 100}}
                                     for i in range(2500)]}).encode()
    with pytest.raises(MessageError, match="250000 bed-seconds") as info:
        parse_json(values, scorer.spec, p)
    assert info.value.status == 413
    deep = b"[" * 100_000 + b"]" * 100_000  # the case 5: a RecursionError was a 500
    with pytest.raises(MessageError, match="nested too deeply"):
        parse_json(b'{"samples": ' + deep + b"}", scorer.spec, p)


def test_a_long_replay_is_scored_in_pieces_and_the_same_as_at_once(endpoints):
    """The issue's case 1 (a 50 bed x 1 h Arrow message grew a worker by 600 MB a bed-hour, to 19.6 GB): windows
    are built SCORE_CHUNK at a time, never a message's whole; what is stored is what shorter messages store."""
    import tracemalloc

    engine, scorer = endpoints.engine, endpoints.engine.scorer
    t = int(time.time()) - 7200
    rng = np.random.default_rng(3)
    hour = vitals(scorer, 3600) + rng.normal(0, 1.0, (len(scorer.spec.signals), 3600))
    hour[:, 1900:2300] = np.concatenate([ramp(scorer, 100, NORMAL, LOW), vitals(scorer, 300, 9, **LOW)], axis=1)
    tracemalloc.start()
    engine.ingest([Chunk("whole", t, hour.copy())], now=time.time())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    window_bytes = len(scorer.spec.signals) * scorer.spec.window_s * 8
    assert peak < 1200 * window_bytes, f"{peak >> 20} MB for one bed-hour: its 3,600 windows were materialised"
    for a in range(0, 3600, 300):
        engine.ingest([Chunk("pieces", t + a, hour[:, a:a + 300].copy())], now=time.time())
    assert len(stored(engine.store, "whole")) == 3600
    assert stored(engine.store, "whole") == stored(engine.store, "pieces")
    assert signal_episodes(engine.store, "whole") == signal_episodes(engine.store, "pieces") != []


def test_answers_are_strict_json_and_never_echo_nan(endpoints):
    """The issue's case 8: a 400 for NaN or 1e999 echoed `"value": NaN` / `Infinity`, which no strict parser reads."""
    from biostream.serving.asgi import strict_json

    for body in (b'{"samples": [{"bed": "b", "start": NaN, "vitals": {"hr": [1]}}]}',
                 b'{"samples": [{"bed": "b", "start": 1e999, "vitals": {"hr": [1]}}]}',
                 b'{"samples": [{"bed": "b", "start": 1800000000, "vitals": {"hr": [Infinity]}}]}',
                 b'{"samples": [{"bed": "b", "start": 1800000000, "vitals": {"hr": [1e999]}}]}'):
        status, out = endpoints.ingest_now(body)
        assert status == 400 and out["problems"][0]["value"] in ("NaN", "Infinity", None), out
        json.loads(strict_json(out), parse_constant=lambda c: pytest.fail(f"{c} in an answer"))
        json.dumps(out, allow_nan=False)  # nothing to replace: the problem echoes the value as text
    assert json.loads(strict_json({"score": math.nan, "x": [math.inf]})) == {"score": None, "x": [None]}
