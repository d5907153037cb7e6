"""One authorisation path (issue #39): every declared operation (`biostream.serving.api`) walked with every role and
without a key, and with path variants (trailing slash, doubled slash, another case, a dot segment, a percent-escape
the server did not decode): the guard answers for the operation the router runs, and anything not declared is
denied. Over HTTP, with the server's own percent-decoding: tests/pipeline/test_hostile.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from biostream.serving.api import operations
from biostream.serving.routes import Body, Operation, Routes
from biostream.serving.security.guard import Guard
from biostream.serving.security.keys import ROLES, KeyStore
from biostream.serving.streaming.store import sqlite_url
from tests.model.test_security import Inner, call

# the only operations open without a key: an orchestrator's probes, the API's description, the board's page
OPEN = {("GET", "/healthz"), ("HEAD", "/healthz"), ("GET", "/livez"), ("HEAD", "/livez"), ("GET", "/readyz"),
        ("HEAD", "/readyz"), ("GET", "/"), ("GET", "/docs.json"), ("GET", "/schema.json"), ("GET", "/static_content"),
        ("GET", "/assets"), ("GET", "/board")}
ROUTES = operations(SimpleNamespace(max_body_bytes=1 << 20, max_batch_windows=8, signals=("hr", "map"),
                                    max_window_s=600, stream={}))


def concrete(path: str) -> str:
    return path.replace("{bed}", "bed-1").replace("{start}", "1795000000")


def variants(path: str) -> list[str]:
    """Paths a router might take for `path` and the guard must not read as another operation."""
    out = [path + "/", path + "//", "/" + path, path.upper(), path.replace("/", "//", 1), path + "/.",
           path.replace("/", "/./", 1), path + "%2F", path[:-1] + "%" + format(ord(path[-1]), "02x")]
    if path.count("/") > 1:
        out.append(path.replace("/", "/../", 1))
    return [v for v in out if v != path]


def test_every_operation_needs_its_roles_a_body_limit_and_no_path_variant_reaches_it(tmp_path):
    url = sqlite_url(tmp_path / "keys.db")
    store = KeyStore(url, create=True)
    keys = {role: store.create(role, f"test {role}")[1] for role in ROLES}
    inner = Inner()
    guard = Guard(inner, store_url=url, routes=ROUTES, audit_every_s=3600)
    walked = 0
    for op in ROUTES:
        key = (op.method, op.path)
        assert op.roles or key in OPEN, f"{op.method} {op.path} declares no role: every endpoint needs one"
        assert op.method != "POST" or all(b.limit > 0 for b in op.bodies), f"{key}: a POST without a body limit"
        if op.open or op.files:
            continue
        path = concrete(op.path)
        inner.calls.clear()
        assert call(guard, op.method, path)[0] == 401, key
        for role in ROLES:
            status, out, _ = call(guard, op.method, path, keys[role])
            if role in op.roles:
                assert status == 200, (key, role, out)
            else:
                assert status == 403 and f"role {' or '.join(op.roles)}" in out["error"], (key, role, out)
        reached = [] if op.handler == "audit" else [f"{op.method} {path}"] * len(op.roles)  # the guard's own
        assert inner.calls == reached, (key, inner.calls)
        for variant in variants(path):
            if ROUTES.match(op.method, variant) is not None:  # a bed id may end as a variant does: its own bed
                assert ROUTES.match(op.method, variant).op is op
                continue
            for role in ROLES:
                status, out, _ = call(guard, op.method, variant, keys[role])
                assert status in (404, 405) and "error" in out, (variant, role, status, out)
            assert call(guard, op.method, variant)[0] == 401, variant
            walked += 1
        assert inner.calls == reached, (key, "a variant reached the service")
        for method in ("PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"):
            status, out, headers = call(guard, method, path, keys["admin"])
            assert status == 405 and headers[b"allow"] and op.method.encode() in headers[b"allow"], (method, path)
    assert walked > 100
    for nothing in ("/nothing", "/alarms/x", "/beds/bed-1", "/beds/bed-1/scores/x", "/audit/1", "//", "/.."):
        assert call(guard, "GET", nothing)[0] == 401
        status, out, _ = call(guard, "GET", nothing, keys["admin"])
        assert status in (404, 405) and out["error"], nothing
    guard.close()
    store.dispose()


def test_the_guard_hands_the_router_its_own_match():
    """What the guard authorised is what runs: the router reads the match the guard put in the scope."""
    match = ROUTES.match("GET", "/beds/bed-1/scores")
    assert match.op.handler == "scores" and match.params == {"bed": "bed-1"}
    assert ROUTES.match("GET", "/alarms/") is None and ROUTES.match("GET", "/Alarms") is None
    assert ROUTES.match("POST", "/alarms") is None and ROUTES.methods("/alarms") == ["GET"]
    assert ROUTES.match("GET", "/static_content/../../etc/passwd") is None
    assert ROUTES.match("GET", "/static_content/swagger-ui.css").op.open


def test_a_route_declared_twice_or_a_post_without_a_body_is_refused_at_once():
    with pytest.raises(ValueError, match="declared twice"):
        Routes([Operation("GET", "/beds/{bed}", ("clinician",)), Operation("GET", "/beds/{other}", ("admin",))])
    with pytest.raises(ValueError, match="no body"):
        Routes([Operation("POST", "/x", ("admin",))])
    with pytest.raises(ValueError, match="only GET, HEAD and POST"):
        Routes([Operation("PUT", "/x", ("admin",), bodies=(Body("application/json", 1),))])
