"""Windows sent as an Arrow IPC stream (`biostream.serving.arrow`) and the middleware that routes them
(`biostream.serving.asgi.Router`), without a server; tests/pipeline/test_service.py sends them over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from pydantic import TypeAdapter

from biostream.features import windows_at
from biostream.serving import Schemas
from biostream.serving.arrow import ARROW_STREAM, windows_from_arrow, windows_to_arrow
from biostream.serving.asgi import Router
from biostream.serving.routes import Body, Operation, Routes
from tests.model.conftest import scorer_for, window_payload


def _stream(columns: dict) -> bytes:
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@pytest.fixture(scope="module")
def scorer(fitted, model_data, configs):
    return scorer_for(fitted["ocsvm"], model_data, configs)


@pytest.fixture(scope="module")
def stored(scorer, model_data, rows):
    """Real windows of the tiny cohort (with missing values) and their patients and seconds."""
    sig, w = list(scorer.spec.signals), scorer.spec.window_s
    full = windows_at(model_data.dataset.vitals, sig, w, rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    assert np.isnan(full).any()
    return full[: scorer.spec.max_batch_windows]


def test_an_arrow_batch_scores_as_the_same_windows_in_json(scorer, stored):
    sig = list(scorer.spec.signals)
    times = [datetime(2026, 11, 21, 10, 0, i, tzinfo=UTC) for i in range(len(stored))]
    pids = [f"bed-{i}" for i in range(len(stored))]
    got = windows_from_arrow(windows_to_arrow(pids, times, {s: stored[:, j] for j, s in enumerate(sig)}), scorer.spec)
    window = TypeAdapter(Schemas(scorer.spec).WindowInput)
    as_json = [window.validate_json(json.dumps(window_payload(w, sig, pid=p, time=t.isoformat())))
               for w, p, t in zip(stored, pids, times, strict=True)]
    for a, b in zip(got, as_json, strict=True):
        assert a.array.dtype == np.float32 and a.array.shape == (len(sig), scorer.spec.window_s)
        np.testing.assert_array_equal(a.array, b.array.astype(np.float32))  # NaN where the JSON had null
        assert (a.patient_id, a.time) == (b.patient_id, b.time)
    assert [p.model_dump() for p in scorer.predict(got)] == [p.model_dump() for p in scorer.predict(as_json)]
    # times as seconds since the epoch
    epoch = windows_from_arrow(windows_to_arrow(pids, [t.timestamp() for t in times],
                                                {s: stored[:, j] for j, s in enumerate(sig)}), scorer.spec)
    assert [w.time for w in epoch] == times


def test_ragged_rows_null_lists_and_null_values(scorer, stored):
    """Windows of different lengths (a recording younger than the window is padded before its start, as in
    JSON); a null list is a signal not sent for that window; a null value is missing."""
    W = scorer.spec.window_s
    hr = [stored[0, 0, -100:].tolist(), stored[1, 0].tolist() + [72.0] * 50, None]
    spo2 = [[None if math.isnan(v) else v for v in stored[0, 1, -100:]], [97.0] * (W + 50), [98.0] * 30]
    floats = pa.list_(pa.float64())
    body = _stream({"patient_id": ["a", "b", "c"], "time": [0, 1, 2], "hr": pa.array(hr, type=floats),
                    "spo2": pa.array(spo2, type=floats)})
    a, b, c = windows_from_arrow(body, scorer.spec)
    assert np.isnan(a.array[:, : W - 100]).all()  # before the recording
    np.testing.assert_array_equal(a.array[0, -100:], stored[0, 0, -100:].astype(np.float32))
    np.testing.assert_array_equal(a.array[1, -100:], stored[0, 1, -100:].astype(np.float32))
    assert np.isnan(a.array[2:]).all()  # signals not in the batch
    np.testing.assert_array_equal(b.array[0], np.r_[stored[1, 0, 50:], [72.0] * 50].astype(np.float32))  # last W
    assert np.isnan(c.array[0]).all() and (c.array[1, -30:] == 98).all()  # hr's list is null: not sent
    assert all(np.isfinite(p.score) for p in scorer.predict([a, b, c]))
    # the writer's ragged form (one array per window), compressed: the same windows
    again = windows_to_arrow(["a", "b"], [0, 1], {"hr": [np.array(hr[0]), np.array(hr[1])],
                                                  "spo2": [np.array(spo2[0], dtype=float), np.array(spo2[1])]}, "lz4")
    for x, y in zip(windows_from_arrow(again, scorer.spec), (a, b), strict=True):
        np.testing.assert_array_equal(x.array, y.array)
    ints = _stream({"patient_id": ["a"], "time": [0.0], "hr": pa.array([[70, 71, 72]], type=pa.list_(pa.int16()))})
    assert windows_from_arrow(ints, scorer.spec)[0].array[0, -3:].tolist() == [70.0, 71.0, 72.0]


def test_bad_arrow_batches_get_messages_naming_row_column_value_and_limit(scorer):
    spec, W = scorer.spec, scorer.spec.window_s
    ok = [70.0] * W

    def batch(**cols):
        base = {"patient_id": ["bed-1", "bed-2"], "time": [0, 1], "hr": [ok, ok], "spo2": [[97.0] * W] * 2}
        base.update(cols)
        return _stream({k: v for k, v in base.items() if v is not None})

    bad = list(ok)
    bad[17] = 400.0
    cases = {
        "row 1 (patient_id 'bed-2'): hr[17] = 400 is outside the physiological range [20, 250] /min":
            batch(hr=[ok, bad]),
        "hr[3] = inf is not a finite number; send null or NaN": batch(hr=[ok, ok[:3] + [math.inf] + ok[4:]]),
        "hr[0] = -3": batch(hr=[[-3.0] + ok[1:], ok]),
        "hr[2] = 1e+300 is outside": batch(hr=[ok[:2] + [1e300] + ok[3:], ok]),  # beyond float32, named as sent
        "hr[1] = 4.61169e+18 is outside": batch(hr=pa.array([[70, 2**62] + [70] * (W - 2), [70] * W],
                                                                    type=pa.list_(pa.int64()))),
        "row 0 (patient_id 'bed-1'): hr has 1799 values but spo2 has 1800": batch(hr=[ok[1:], ok]),
        "no signal sent": batch(hr=pa.array([ok, None]), spo2=pa.array([[97.0] * W, None])),
        f"send 1 to {spec.max_window_s}": batch(hr=[ok + [70.0] * spec.max_window_s, ok],
                                                spo2=[[97.0] * (W + spec.max_window_s), [97.0] * W]),
        "0 values per signal": batch(hr=[[], ok], spo2=[[], [97.0] * W]),
        "are missing (limit 90%": batch(hr=[[None] * W, ok], spo2=[[None] * W, [97.0] * W]),
        "unknown column(s) 'lactate'": batch(lactate=[ok, ok]),
        "no `time` column": batch(time=None),
        "`patient_id` is null": batch(patient_id=["a", None]),
        "`patient_id` is int64": batch(patient_id=[1, 2]),
        "patient_id has 0 characters": batch(patient_id=["", "b"]),
        "`time` is string": batch(time=["10:00", "10:01"]),
        "time = inf is not a time": batch(time=[0.0, math.inf]),
        "`hr` is string": batch(hr=["70", "71"]),
        f"send 1 to {spec.max_batch_windows} per request": _stream(
            {"patient_id": [f"b{i}" for i in range(spec.max_batch_windows + 1)],
             "time": list(range(spec.max_batch_windows + 1)), "hr": [ok] * (spec.max_batch_windows + 1)}),
        "not a valid Arrow IPC stream": b'{"windows": []}',
        "empty body": b"",
    }
    for needle, body in cases.items():
        with pytest.raises(ValueError) as info:
            windows_from_arrow(body, spec)
        assert needle in str(info.value), (needle, str(info.value))
    truncated = batch()[:-100]
    with pytest.raises(ValueError, match="not a valid Arrow IPC stream"):
        windows_from_arrow(truncated, spec)


def _call(app, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict]:
    """One request through an ASGI app, in process: (status, JSON body)."""
    sent: list[dict] = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return queue.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], json.loads(b"".join(m.get("body", b"") for m in sent[1:]))


def _predict(limit: int = 200_000) -> Routes:
    """/predict and /explain as the service declares them (JSON for BentoML; Arrow on /predict for our handler)."""
    return Routes([Operation("POST", "/predict", ("integrator",), bodies=(
        Body("application/json", limit), Body(ARROW_STREAM, limit, "arrow"))),
        Operation("POST", "/explain", ("integrator",), bodies=(Body("application/json", limit),))])


def test_the_router_routes_arrow_refuses_other_types_and_oversized_bodies():
    seen = []

    async def inner(scope, receive, send):  # stands for BentoML: answers JSON
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"json": true}'})

    async def arrow(call):
        return 200, {"bytes": len(call.body)}

    app = Router(inner, routes=_predict(), handler=lambda name: {"arrow": arrow}[name])
    assert _call(app, "POST", "/predict", b"x" * 150_000, ARROW_STREAM) == (200, {"bytes": 150_000})  # 3 chunks
    assert _call(app, "POST", "/predict", b"{}", "application/json") == (200, {"json": True})
    status, answer = _call(app, "POST", "/explain", b"x", ARROW_STREAM)  # Arrow is for /predict only
    assert status == 415 and "send the request body as application/json" in answer["error"]
    status, answer = _call(app, "POST", "/predict", b"x", "multipart/form-data")
    assert status == 415 and f"application/json or {ARROW_STREAM}" in answer["error"]
    status, answer = _call(app, "POST", "/predict", b"{}", "application/json; charset=utf-16")
    assert status == 415 and "UTF-8" in answer["error"]
    assert _call(app, "POST", "/predict", b"{}", "application/json; charset=UTF-8") == (200, {"json": True})
    status, answer = _call(app, "POST", "/predict", b"x" * 200_001, ARROW_STREAM)
    assert status == 413 and "over 200000 bytes" in answer["error"]
    status, answer = _call(app, "POST", "/predict/", b"{}", "application/json")  # nothing undeclared is run
    assert status == 404 and "no endpoint" in answer["error"]
    assert seen == ["/predict", "/predict"]

    async def broken(call):
        raise RuntimeError("a bug of ours")

    status, answer = _call(Router(inner, routes=_predict(), handler=lambda name: broken), "POST",
                           "/predict", b"x", ARROW_STREAM)
    assert status == 500 and "check the server log" in answer["error"]  # JSON, like BentoML's own 500s


def test_the_router_stops_quietly_when_the_client_goes_away():
    calls, sent = [], []

    async def arrow(call):
        calls.append(call.body)
        return 200, {}

    messages = [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    app = Router(None, routes=_predict(64 << 20), handler=lambda name: arrow)
    asyncio.run(app({"type": "http", "method": "POST", "path": "/predict",
                     "headers": [(b"content-type", ARROW_STREAM.encode())]}, receive, send))
    assert calls == [] and sent == []
