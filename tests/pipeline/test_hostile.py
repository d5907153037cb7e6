"""Issue #39 over HTTP, against the served bento (`bentoml serve`, the session's `served`): the issue's ten cases as
regressions, and a corpus of hostile requests (path variants, wrong and huge bodies, bombs, bad times and ids),
each sent with every role's key and without: no 5xx, every JSON answer strict, no worker process dies, and a bed
streamed right after is scored. In process: tests/model/test_hostile.py and test_routes.py."""

from __future__ import annotations

import http.client
import json
import threading
import time

import numpy as np
import pyarrow as pa
import pytest

from tests.pipeline.conftest import Client, workers

pytestmark = pytest.mark.services  # the stream store and keys: the service's sqlite store
ROLES = ("gateway", "clinician", "integrator", "admin")


def raw(port: int, method: str, path: str, key: str | None = None, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent as written (percent-escapes included): status, headers, body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    out = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    conn.close()
    return out


def strict(body: bytes) -> object:
    return json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in an answer: not JSON"))


def arrow(rows: int, bed: str | None = "x", t: float = 1.8e9, compression: str | None = "zstd",
          distinct: bool = False) -> bytes:
    beds = [f"b{i}" for i in range(rows)] if distinct else [bed] * rows
    table = pa.table({"bed": pa.array(beds, type=pa.string()), "time": pa.array(np.full(rows, t)),
                      "hr": pa.array(np.full(rows, 72.0))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def corpus(now: int) -> list[tuple[str, str, bytes, dict[str, str]]]:
    """(method, path as sent, body, headers): what a careless or hostile gateway or integrator sends."""
    json_h, arrow_h = {"Content-Type": "application/json"}, {"Content-Type": "application/vnd.apache.arrow.stream"}
    cases = []
    for path in ("/alarms", "/beds", "/audit", "/monitoring", "/metrics", "/beds/bed-1/scores"):
        for variant in (path + "/", path + "//", "/" + path, path.upper(), path.replace("/", "/%2F", 1),
                        path[:2] + "%" + format(ord(path[2]), "02x") + path[3:] + "/", path + "/.",
                        path + "/..", path + "%00", path + "?a=" + "b" * 3000, path + "#x"):
            cases.append(("GET", variant, b"", {}))
    deep = b"[" * 5000 + b"]" * 5000
    bodies = [b"", b"{", b"null", b"[]", b"{}", deep, b'{"samples": ' + deep + b"}", b"\xff\xfe\x00",
              b'{"samples": [{"bed": "b", "start": NaN, "vitals": {"hr": [1]}}]}',
              b'{"samples": [{"bed": "b", "start": 1e999, "vitals": {"hr": [Infinity]}}]}',
              b'{"samples": [{"bed": "b\\u0000", "start": 1800000000, "vitals": {"hr": [1]}}]}',
              b'{"samples": [{"bed": "' + b"x" * 100000 + b'", "start": 1800000000, "vitals": {"hr": [1]}}]}',
              json.dumps({"samples": [{"bed": "ahead", "start": now + 365 * 86400, "vitals": {"hr": [72]}}]}).encode(),
              json.dumps({"samples": [{"bed": f"m{i}", "start": now - 10, "vitals": {"hr": [72]}}
                                      for i in range(4001)]}).encode(),
              json.dumps({"samples": [{"bed": "big", "start": now - 4000, "vitals": {"hr": [72] * 3601}}]}).encode(),
              json.dumps({"samples": [{"bed": "f", "start": now - 10, "vitals_f32": {"hr": "////"}}]}).encode()]
    for path in ("/ingest", "/predict", "/score_series", "/explain", "/metadata", "/beds/b/episodes/1/ack"):
        cases += [("POST", path, b, json_h) for b in bodies]
        cases += [("POST", path, b"{}", {"Content-Type": t}) for t in (
            "application/json; charset=utf-16", "text/plain", "multipart/form-data", "application/xml",
            "application/vnd.apache.arrow.stream; charset=latin-1")]
    for path in ("/ingest", "/predict"):
        cases += [("POST", path, b, arrow_h) for b in (
            arrow(1_500_000, None), arrow(1_000_000), arrow(5000, distinct=True), arrow(10, t=float("nan")),
            arrow(10, bed=None, compression=None), b"ARROW1" + b"\x00" * 64, arrow(3)[:-20])]
    cases.append(("POST", "/beds/b/episodes/1/ack", b"x" * (2 << 20), json_h))  # the issue: a 20 MB ack answered 200
    for query in ("since=-1", "since=1e999", "since=nan", "since=0001-01-01T00:00:00Z", "limit=99999999999",
                  "until=9999-12-31T23:59:60Z", "since=" + "9" * 400, "key=" + "z" * 20, "outcome=maybe"):
        cases += [("GET", f"/beds/b/scores?{query}", b"", {}), ("GET", f"/audit?{query}", b"", {}),
                  ("GET", f"/beds/b/report?{query}", b"", {})]
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
        cases += [(method, p, b"", {}) for p in ("/alarms", "/ingest", "/healthz", "/nothing")]
    return cases


def test_a_corpus_of_hostile_requests_gets_4xx_strict_json_and_kills_no_worker(served):
    port, _, keys = served
    before = workers(port)
    assert len(before) >= 1
    cases = corpus(int(time.time()))
    assert len(cases) >= 200, len(cases)
    seen: dict[int, int] = {}
    for method, path, body, headers in cases:
        for key in (None, *(keys[r] for r in ROLES)):
            status, answer_headers, answer = raw(port, method, path, key, body, headers)
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, (method, path[:80], status, answer[:300])
            assert answer_headers.get("x-content-type-options") == "nosniff", (method, path[:80])
            if answer_headers.get("content-type", "").startswith("application/json") and answer:
                out = strict(answer)
                if status >= 400:
                    assert isinstance(out, dict) and isinstance(out.get("error") or out.get("problems"),
                                                               str | list), (method, path[:80], out)
                    assert len(answer) < 200_000, (method, path[:80], len(answer))
    assert workers(port) == before, "a worker died (a new one took its place)"
    assert seen.get(401, 0) and seen.get(403, 0) and seen.get(404, 0) and seen.get(405, 0) and seen.get(413, 0)
    t = int(time.time()) - 30
    status, out = Client(port, keys["gateway"]).post("/ingest", {"samples": [
        {"bed": "after-the-corpus", "start": t, "vitals": {"hr": [72.0] * 20}}]})
    assert status == 200 and len(out["beds"][0]["seconds"]) == 20


def test_the_issues_cases_over_http(served, repo):
    """The issue's numbered findings against `make serve` of main 4ffb783, each as the service answers it now."""
    port, _, keys = served
    gateway, clinician, admin = (Client(port, keys[r]) for r in ("gateway", "clinician", "admin"))
    now = int(time.time())
    # 3. an authorisation bypass: GET /alarms/ (and the like) answered every bed's alarms to any role
    for path in ("/alarms/", "/alarms//", "/al%61rms/", "/al%61rms", "/ALARMS"):
        for role in ("gateway", "integrator", "admin"):
            status, _, answer = raw(port, "GET", path, keys[role])
            assert status in (403, 404) and b"open" not in answer, (path, role, status, answer[:200])
    assert raw(port, "GET", "/al%61rms", keys["clinician"])[0] == 200, "the server decodes %61 once: /alarms"
    # 4. amplification: a few kB of zstd Arrow with 1.5 M rows: 413 at once, a small answer
    began = time.perf_counter()
    status, _, answer = raw(port, "POST", "/ingest", keys["gateway"], arrow(1_500_000, None),
                            {"Content-Type": "application/vnd.apache.arrow.stream"})
    assert status == 413 and len(answer) < 1000 and time.perf_counter() - began < 5, (status, answer[:300])
    # 5. JSON nested 1,000 deep: 400
    status, out = gateway.post("/ingest", b"[" * 1000 + b"]" * 1000)
    assert status == 400 and "nested too deeply" in out["error"]
    # 2. a second a year ahead: refused (400 naming the skew), the bed shows 'no valid data', and its next
    # seconds alarm as a control bed's
    status, out = gateway.post("/ingest", {"samples": [{"bed": "ahead-1", "start": now + 365 * 86400,
                                                        "vitals": {"map": [85.0]}}]})
    assert status == 400 and "max_skew_s" in out["problems"][0]["error"], out
    status, alarms = clinician.get_json("/alarms")
    condition = [a for a in alarms["open"] if a["bed"] == "ahead-1"]
    assert condition and condition[0]["alarm_class"] == "technical" and condition[0]["reason"].startswith(
        "no valid data from this bed")
    low = {"map": [45.0 + 0.1 * (i % 3) for i in range(250)], "sbp": [70.0] * 250, "dbp": [33.0] * 250}
    for bed in ("ahead-1", "control-1"):
        status, out = gateway.post("/ingest", {"samples": [{"bed": bed, "start": now - 250, "vitals": low}]})
        assert status == 200, out
    scored = {bed: clinician.get_json(f"/beds/{bed}/scores?limit=1000")[1]["seconds"] for bed in ("ahead-1",
                                                                                                   "control-1")}
    assert len(scored["ahead-1"]) == 250 and [(s["score"], s["alarm"]) for s in scored["ahead-1"]] == [
        (s["score"], s["alarm"]) for s in scored["control-1"]]
    opened = {bed: [(e["start"], e["alarm_class"]) for e in clinician.get_json(f"/beds/{bed}/episodes")[1][
        "episodes"] if not e["reason"]] for bed in ("ahead-1", "control-1")}
    assert opened["ahead-1"] == opened["control-1"] and opened["control-1"], opened
    # a gateway key tied to its ward's beds writes nothing else, however it names them
    from biostream.serving.security.keys import KeyStore

    store = KeyStore(f"sqlite:///{repo / 'stores' / 'streams.db'}")
    ward3 = Client(port, store.create("gateway", "ward 3 gateway", beds="icu3-")[1])
    store.dispose()
    status, out = ward3.post("/ingest", {"samples": [{"bed": b, "start": now - 5, "vitals": {"hr": [72.0]}}
                                                     for b in ("icu3-1", "control-1")]})
    assert status == 200 and [b["bed"] for b in out["beds"]] == ["icu3-1"] and out["problems"][0]["bed"] == "control-1"
    assert ward3.post("/ingest", {"samples": [{"bed": "control-1", "start": now - 4, "vitals": {"hr": [72.0]}}]}
                      )[0] == 403
    # 7. audit: a refused key names its id; the message names its bed; an acknowledgement that changes nothing
    # says so
    offered = keys["clinician"][:-4] + "AAAA"
    assert raw(port, "GET", "/alarms", offered)[0] == 401
    [episode] = [e for e in clinician.get_json("/beds/control-1/episodes")[1]["episodes"] if not e["reason"]][:1]
    ack = f"/beds/control-1/episodes/{episode['start']}/ack"
    assert clinician.post(ack, b"")[1]["changed"] and not clinician.post(ack, b"")[1]["changed"]
    time.sleep(2.5)  # each worker writes its audit entries once a second
    key_id = keys["clinician"].split("_")[1]
    trail = admin.get_json(f"/audit?key={key_id}&outcome=denied")[1]["entries"]
    assert any(e["status"] == 401 and e["action"] == "GET /alarms" for e in trail), "the offered key is named"
    written = admin.get_json("/audit?bed=control-1")[1]["entries"]
    assert [e["action"] for e in written if e["role"] == "gateway"] == ["POST /ingest"]
    acks = [e["detail"] for e in written if e["action"].endswith("/ack")]
    assert len(acks) == 2 and "already acknowledged" in acks[1] and "nothing changed" in acks[1], acks
    # 8. strict JSON: NaN and 1e999 are named, as text
    status, _, answer = raw(port, "POST", "/ingest", keys["gateway"],
                            b'{"samples": [{"bed": "b", "start": NaN, "vitals": {"hr": [1e999]}}]}',
                            {"Content-Type": "application/json"})
    assert status == 400 and strict(answer)["problems"][0]["value"] == "NaN"
    # 10. the rest: a 400 is one `error` string, a charset other than UTF-8 is refused, a body on an
    # acknowledgement is bounded, pages and reports carry a Content-Security-Policy
    status, out = Client(port, keys["integrator"]).post("/predict", {"windows": 5})
    assert status == 400 and isinstance(out["error"], str) and "windows" in out["error"], out
    status, out = gateway.post("/ingest", b"{}", content_type="application/json; charset=utf-16")
    assert status == 415 and "UTF-8" in out["error"]
    assert raw(port, "POST", ack, keys["clinician"], b"{" * (20 << 20), {"Content-Type": "application/json"})[0] == 413
    status, headers, _ = raw(port, "GET", "/board")
    assert status == 200 and "script-src 'sha256-" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    status, headers, _ = raw(port, "GET", "/beds/control-1/report?format=html", keys["clinician"])
    assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"


def test_too_many_requests_at_once_are_refused_with_retry_after_and_audited(served):
    """The issue's case 6: BentoML's concurrency limit answered 429 before the guard (unaudited, no Retry-After).
    The small profile lets a worker serve 16 requests at once; 48 slow ones together overflow both workers."""
    port, _, keys = served
    clinician = keys["clinician"]
    t = int(time.time()) - 900
    Client(port, keys["gateway"]).post("/ingest", {"samples": [
        {"bed": "busy-1", "start": t, "vitals": {"hr": [72.0 + (i % 5) for i in range(600)]}}]})
    answers: list[tuple[int, dict[str, str]]] = []

    def one() -> None:
        status, headers, _ = raw(port, "GET", "/beds/busy-1/report?format=pdf", clinician)
        answers.append((status, headers))

    threads = [threading.Thread(target=one) for _ in range(48)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    refused = [h for s, h in answers if s == 429]
    assert refused and all(h.get("retry-after") == "1" for h in refused), sorted(s for s, _ in answers)
    assert all(s in (200, 429) for s, _ in answers)
    time.sleep(2.5)
    trail = Client(port, keys["admin"]).get_json("/audit?bed=busy-1&outcome=denied")[1]["entries"]
    assert sum(e["status"] == 429 for e in trail) == len(refused), "every 429 is in the trail"
