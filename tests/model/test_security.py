"""Patient data behind a lock (issue #29, sections 1 and 2): API keys with roles in the real key store (sqlite and
the machines' PostgreSQL, which these tests fail without), the ASGI guard in front of every endpoint (401, 403,
revocation seen by another worker within seconds, development mode on loopback only), and the append-only audit
trail. The guard runs in front of the real service in tests/pipeline/test_service.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from biostream.serving.api import operations
from biostream.serving.security.guard import Guard
from biostream.serving.security.keys import AUDIT, KEYS, KeyStore
from biostream.serving.streaming.store import sqlite_url
from tests.conftest import ROOT
from tests.pipeline.conftest import scratch_database

pytestmark = pytest.mark.services  # the local PostgreSQL and Redis servers


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, monkeypatch) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "stores" / "streams.db")
    else:
        monkeypatch.setenv("BIOSTREAM_KEY_PEPPER", "a-test-pepper-of-this-session")
        with scratch_database("biostream_keys") as url:
            yield url


def routes():
    """The service's declared operations (`biostream.serving.api`), for a spec of small limits."""
    from types import SimpleNamespace

    return operations(SimpleNamespace(max_body_bytes=1 << 20, max_batch_windows=8, signals=("hr", "map"),
                                      max_window_s=600, stream={}))


class Inner:
    """The service behind the guard: answers 200 and counts what reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        self.calls.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def call(app, method: str, path: str, token: str | None = None, client: str = "127.0.0.1", query: bytes = b""):
    """One request through the ASGI app: (status, JSON answer, headers)."""
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    scope = {"type": "http", "method": method, "path": path, "query_string": query, "headers": headers,
             "client": (client, 50000), "server": ("127.0.0.1", 3000)}
    out: dict = {"body": b""}

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], dict(message.get("headers", []))
        else:
            out["body"] += message.get("body", b"")

    asyncio.run(app(scope, receive, send))
    return out["status"], json.loads(out["body"] or b"null"), out["headers"]


def cli(store_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "biostream.serving.security.cli", "--store", store_url, *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_the_cli_on_a_store_without_keys_names_the_fix_not_a_traceback(tmp_path):
    env_pepper = os.environ.pop("BIOSTREAM_KEY_PEPPER", None)
    try:
        listed = cli(f"sqlite:///{tmp_path / 'keys.db'}", "keys", "list")
    finally:
        if env_pepper is not None:
            os.environ["BIOSTREAM_KEY_PEPPER"] = env_pepper
    assert listed.returncode == 1 and "Traceback" not in listed.stderr, listed.stderr
    assert "no key has been created" in listed.stderr and "biostream keys create --role" in listed.stderr


def test_keys_are_created_listed_and_revoked_by_the_cli_and_never_stored_in_clear(store_url):
    made = cli(store_url, "keys", "create", "--role", "clinician", "--name", "ward 3 board")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    token = key["key"]
    assert token.startswith(f"bsk_{key['key_id']}_") and key["role"] == "clinician" and key["expires_at"]
    store = KeyStore(store_url)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.select(KEYS)).mappings()]
    secret = token[len("bsk_") + 12 + 1:]  # the secret may hold "_" itself
    assert len(rows) == 1 and secret not in json.dumps(rows), "only a digest of the secret is kept"
    assert rows[0]["digest"] == store.digest(secret) and len(rows[0]["digest"]) == 64
    listed = cli(store_url, "keys", "list")
    assert listed.returncode == 0 and secret not in listed.stdout and "digest" not in listed.stdout
    assert [json.loads(line)["key_id"] for line in listed.stdout.splitlines()] == [key["key_id"]]
    wrong = cli(store_url, "keys", "create", "--role", "nurse", "--name", "x")
    assert wrong.returncode != 0 and "clinician" in wrong.stderr, "the roles are named"
    gone = cli(store_url, "keys", "revoke", "000000000000")
    assert gone.returncode != 0 and "keys list" in gone.stderr
    revoked = cli(store_url, "keys", "revoke", key["key_id"])
    assert revoked.returncode == 0 and json.loads(revoked.stdout)["revoked_at"]
    trail = [(e["action"], e["target"]) for e in store.audit()]
    assert trail == [("keys create", key["key_id"]), ("keys revoke", key["key_id"])]
    assert all(e["detail"].startswith("by ") and "@" in e["detail"] for e in store.audit()), "the operator is named"
    scoped = cli(store_url, "keys", "create", "--role", "gateway", "--name", "ward 3 gateway", "--beds", "icu3-,or1-")
    assert scoped.returncode == 0 and json.loads(scoped.stdout)["beds"] == "icu3-,or1-", scoped.stderr
    wrong = cli(store_url, "keys", "create", "--role", "clinician", "--name", "x", "--beds", "icu3-")
    assert wrong.returncode != 0 and "gateway" in wrong.stderr
    wrong = cli(store_url, "keys", "create", "--role", "gateway", "--name", "x", "--beds", "icu 3/")
    assert wrong.returncode != 0 and "--beds" in wrong.stderr
    store.dispose()


def test_every_endpoint_needs_a_key_with_its_role_and_the_trail_records_who_did_what(store_url):
    store = KeyStore(store_url, create=True)
    keys = {role: store.create(role, f"test {role}")[1] for role in ("gateway", "clinician", "integrator", "admin")}
    _, expired = store.create("clinician", "expired", expires_days=1, now=time.time() - 2 * 86400)
    inner = Inner()
    guard = Guard(inner, store_url=store_url, routes=routes(), audit_every_s=3600)  # flushed by the test
    other_worker = Guard(Inner(), store_url=store_url, routes=routes(), cache_s=0.5, audit_every_s=3600)
    # health, readiness and the API's description are open
    for path in ("/healthz", "/readyz", "/livez", "/docs.json"):
        assert call(guard, "GET", path)[0] == 200
    # no credential: 401 naming the header and the role, with the challenge; nothing reaches the service
    status, out, headers = call(guard, "GET", "/beds/bed-1/scores")
    assert status == 401 and "Authorization: Bearer" in out["error"] and "clinician" in out["error"]
    assert headers[b"www-authenticate"].startswith(b"Bearer")
    good = keys["clinician"]
    mistyped = good[:-1] + ("A" if good[-1] != "A" else "B")  # one character of the secret wrong
    for token, why in (("nonsense", "not a BioStream key"), (mistyped, "not one this service"), (expired, "expired")):
        status, out, _ = call(guard, "GET", "/alarms", token)
        assert status == 401 and why in out["error"], out
    # the wrong role: 403 naming the role needed; the same answer whether the bed exists or not
    for path, role, needs in (("/beds/bed-1/scores", "gateway", "clinician"), ("/ingest", "clinician", "gateway"),
                              ("/predict", "clinician", "integrator"), ("/metrics", "integrator", "admin"),
                              ("/audit", "clinician", "admin"), ("/score_series", "gateway", "integrator")):
        method = "GET" if path in ("/beds/bed-1/scores", "/metrics", "/audit") else "POST"
        status, out, _ = call(guard, method, path, keys[role])
        assert status == 403 and f"role {needs}" in out["error"] and f"role {role}" in out["error"], (path, out)
    assert call(guard, "GET", "/beds/no-such-bed/episodes", keys["gateway"])[:2] == \
        call(guard, "GET", "/beds/bed-1/episodes", keys["gateway"])[:2]
    assert inner.calls == ["GET /healthz", "GET /readyz", "GET /livez", "GET /docs.json"], "nothing else reached it"
    # the right role reaches the service
    for method, path, role in (("GET", "/beds/bed-1/scores", "clinician"), ("GET", "/alarms", "clinician"),
                               ("POST", "/ingest", "gateway"), ("POST", "/predict", "integrator"),
                               ("POST", "/explain", "clinician"), ("GET", "/metrics", "admin"),
                               ("POST", "/metadata", "gateway")):
        assert call(guard, method, path, keys[role])[0] == 200, (method, path, role)
    # revoked: another worker refuses it within its cache period
    assert call(other_worker, "GET", "/alarms", keys["clinician"])[0] == 200
    key_id = keys["clinician"].split("_")[1]
    store.revoke(key_id)
    time.sleep(0.6)
    status, out, _ = call(other_worker, "GET", "/alarms", keys["clinician"])
    assert status == 401 and "revoked" in out["error"]
    # a hostile id in a path is kept escaped (PostgreSQL refuses a NUL in text: the trail would stall)
    assert call(guard, "GET", "/beds/bed\x00nul/scores", keys["gateway"])[0] == 403
    # the trail: who read which bed, who was denied, from where
    guard._ready[1].flush()
    assert not guard._ready[1].entries, "every entry written"
    assert [e["target"] for e in store.audit(outcome="denied")][-1] == "'bed\\x00nul'"
    status, out, _ = call(guard, "GET", "/audit", keys["admin"], query=b"bed=bed-1&outcome=denied")
    assert status == 200
    assert [(e["role"], e["action"], e["status"]) for e in out["entries"]] == [
        (None, "GET /beds/{bed}/scores", 401), ("gateway", "GET /beds/{bed}/scores", 403),
        ("gateway", "GET /beds/{bed}/episodes", 403)]
    allowed = call(guard, "GET", "/audit", keys["admin"], query=b"bed=bed-1&outcome=allowed")[1]["entries"]
    assert [(e["role"], e["key_id"], e["client"], e["status"]) for e in allowed] == [
        ("clinician", key_id, "127.0.0.1", 200)]
    # nothing in the trail can be changed through the API
    with store.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(AUDIT)).scalar_one()
    for method in ("POST", "PUT", "DELETE", "PATCH"):  # the trail is append-only: only GET is declared
        status, out, headers = call(guard, method, "/audit", keys["admin"])
        assert status == 405 and "it takes GET" in out["error"] and headers[b"allow"] == b"GET", (method, out)
    for bad in (b"limit=1000000000", b"limit=" + b"9" * 5000, b"bed=a&bed=b", b"since=-1", b"who=me"):
        status, out, _ = call(guard, "GET", "/audit", keys["admin"], query=bad)
        assert status == 400 and out["error"], (bad, out)
    guard._ready[1].flush()
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(AUDIT).where(AUDIT.c.id <= before)).mappings().all()
    assert len(rows) == before, "earlier entries all kept"
    guard.close()
    other_worker.close()
    assert [e["status"] for e in store.audit(key_id=keys["admin"].split("_")[1])][-9:] == [405] * 4 + [400] * 5
    store.dispose()


def test_development_mode_asks_no_key_and_answers_loopback_only(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOSTREAM_AUTH", "off")
    inner = Inner()
    guard = Guard(inner, store_url=sqlite_url(tmp_path / "nothing.db"), routes=routes())
    assert call(guard, "GET", "/alarms")[0] == 200
    status, out, _ = call(guard, "GET", "/alarms", client="10.1.2.3")
    assert status == 403 and "loopback" in out["error"]
    assert inner.calls == ["GET /alarms"]


def test_a_service_without_a_key_store_says_how_to_make_one_and_sees_it_once_made(tmp_path, monkeypatch):
    from biostream.serving.security import guard as guard_module

    url = sqlite_url(tmp_path / "s.db")
    guard = Guard(Inner(), store_url=url, routes=routes())
    status, out, _ = call(guard, "GET", "/alarms", "bsk_x")
    assert status == 503 and "biostream keys create" in out["error"]
    store = KeyStore(url, create=True)  # an admin makes the first key while the service runs
    _, token = store.create("clinician", "first")
    monkeypatch.setattr(guard_module, "RETRY_S", 0.0)
    assert call(guard, "GET", "/alarms", token)[0] == 200, "no restart needed"
    guard.close()
    store.dispose()


def test_a_clinician_acknowledges_an_alarm_and_the_trail_and_the_episode_say_who_and_when(alarming, store_url):
    """POST /beds/<bed>/episodes/<start>/ack through the guard, the service's body router and the stream endpoints
    over a real store: the clinician's key id and the time are kept on the episode (the first acknowledgement is
    kept; the engine's later writes of the episode leave it) and in the audit trail with the episode named."""
    from biostream.serving.asgi import Router
    from biostream.serving.streaming.engine import Chunk, StreamEngine
    from biostream.serving.streaming.http import StreamEndpoints
    from biostream.serving.streaming.store import Store
    from tests.model.test_streams import START, params

    scorer, pid, values = alarming
    endpoints = StreamEndpoints(StreamEngine(scorer, Store(store_url), params(store_url)))
    endpoints.engine.ingest([Chunk(pid, START, values[:, :900].copy())], now=1.0)
    episodes = endpoints.engine.store.episodes(pid)
    assert episodes, "the alarming patient opens an episode in its first 900 s"
    start = episodes[0]["start"]
    store = KeyStore(store_url, create=True)
    keys = {role: store.create(role, f"test {role}")[1] for role in ("gateway", "clinician")}
    declared = operations(scorer.spec)
    app = Guard(Router(Inner(), routes=declared, handler=lambda name: getattr(endpoints, name)), store_url=store_url,
                routes=declared, audit_every_s=3600)
    path = f"/beds/{pid}/episodes/{start}/ack"
    status, out, _ = call(app, "POST", path, keys["gateway"])
    assert status == 403 and "needs the role clinician" in out["error"]
    status, out, _ = call(app, "POST", path, keys["clinician"])
    clinician = keys["clinician"].split("_")[1]
    assert status == 200 and out["episode"]["acknowledged_by"] == clinician and out["episode"]["acknowledged_at"]
    first = out["episode"]["acknowledged_at"]
    # the engine writes the episode again (the stream goes on): the acknowledgement stays
    endpoints.engine.ingest([Chunk(pid, START + 900, values[:, 900:960].copy())], now=2.0)
    again = next(e for e in endpoints.engine.store.episodes(pid) if e["start"] == start)
    assert again["acked_by"] == clinician
    again = call(app, "POST", path, keys["clinician"])[1]
    assert again["episode"]["acknowledged_at"] == first and not again["changed"], "the first is kept"
    iso_start = out["episode"]["start"]  # the episode's start as GET answers it names it too
    assert call(app, "POST", f"/beds/{pid}/episodes/{iso_start}/ack", keys["clinician"])[0] == 200
    for bad, code, says in ((f"/beds/{pid}/episodes/{start + 1}/ack", 404, "no alarm episode"),
                            (f"/beds/{pid}/episodes/yesterday/ack", 400, "start"),
                            (f"/beds/{pid}/episodes/-99999999999999999999/ack", 400, "1970"),
                            ("/beds/bed\x00nul/episodes/1/ack", 400, "bed"),
                            (f"/beds/{pid}/episodes/{start}/silence", 404, "no endpoint POST")):
        status, out, _ = call(app, "POST", bad, keys["clinician"])
        assert status == code and says in out["error"], (bad, out)
    app._ready[1].flush()
    trail = [e for e in store.audit(target=pid) if e["outcome"] == "allowed"]
    assert trail[0]["action"] == "POST /beds/{bed}/episodes/{start}/ack"
    assert (trail[0]["key_id"], trail[0]["status"], trail[0]["detail"]) == (clinician, 200, f"episode {start}")
    denied = store.audit(target=pid, outcome="denied")
    assert [(e["role"], e["status"]) for e in denied] == [("gateway", 403)]
    app.close()
    store.dispose()
    endpoints.engine.store.dispose()
