"""The ASGI guard in front of every endpoint of the service (`Guard`): the request matched to its declared
operation (`biostream.serving.api`), a credential with a role that operation allows, else 401, 403, 404 or 405,
before anything else reads the request; every request that presents itself leaves an entry in the audit trail
(`AuditBuffer`). Roles, keys and the trail: docs/security.md.

Development mode (`BIOSTREAM_AUTH=off`): no credential is asked, and only loopback clients are answered."""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from biostream.serving.routes import Match, Routes
from biostream.serving.security.keys import ROLE_NOTE, KeyStore, Verifier
from biostream.serving.streaming.messages import is_bed, query_params, time_text, whole_number

AUTH_ENV = "BIOSTREAM_AUTH"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
RETRY_S = 5.0  # a key store that could not be opened is tried again after this long (no restart needed)
MAX_KEPT = 100_000  # audit entries kept in memory while the store refuses them; the oldest go first, logged
OFFERED = re.compile(r"bsk_([0-9a-f]{12})_")  # the key id a credential names, valid or not (the trail keeps it)
# on every answer: no type sniffing, never framed, no referrer (a bed id in a URL stays here)
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]
_log = logging.getLogger("biostream")


class AuditBuffer:
    """Audit entries kept in memory and written in one insert a second (a request never waits for the trail)."""

    def __init__(self, store: KeyStore, every_s: float = 1.0) -> None:
        self.store, self.every_s = store, every_s
        self.entries: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def close(self) -> None:
        """Write what is kept and stop (at exit)."""
        self.stopped.set()
        self.flush()
        atexit.unregister(self.close)

    def add(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.entries.append(entry)

    def flush(self) -> None:
        with self.lock:
            entries, self.entries = self.entries, []
        if entries:
            try:
                self.store.write_audit(entries)
            except Exception:  # the store is away: keep them for the next flush
                _log.exception("writing %d audit entries failed; kept for the next try", len(entries))
                with self.lock:
                    self.entries[:0] = entries
                    over = len(self.entries) - MAX_KEPT
                    if over > 0:
                        del self.entries[:over]
                        _log.error("the audit store refused entries for too long: the oldest %d were dropped", over)

    def _run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.flush()


class Guard:
    """ASGI middleware: the one authorisation path. It matches the request to its declared operation
    (`biostream.serving.routes`: the match the router then runs, so no path variant reaches an endpoint the guard
    read as another), and asks a credential (`Authorization: Bearer <key>`) with a role that operation allows, else
    401 (none, or not a valid key) or 403 (a role not allowed), each naming what is missing, before anything else
    reads the request; so no answer tells a caller who may not read a bed whether that bed exists. A request
    matching no operation is denied (404, or 405 naming the methods declared), once its key is valid. At most
    `max_concurrency` requests are served at once: more get 429 with `Retry-After` (audited; BentoML's own limit
    ran before any guard, unaudited). Every request that presents itself (allowed or denied) leaves an entry in
    the audit trail, written in the background once a second (`AuditBuffer`): who (the key id, also a refused
    key's id when the credential names one), which operation, which bed, the status; a handler adds its own
    detail (`Call.audit`: the beds of a stream message, an acknowledgement that changed nothing). `GET /audit`
    reads the trail (admin), nothing changes it. Every answer carries `SECURITY_HEADERS`.

    Open without a credential: the operations declared open (an orchestrator's probes, the API's description and
    the board's page: no patient data in them).

    `store_url`: the key store (the stream store's database); `routes`: the declared operations."""

    def __init__(self, app: Any, store_url: str | Callable[[], str], routes: Routes | Callable[[], Routes],
                 cache_s: float | None = None, audit_every_s: float = 1.0, max_concurrency: int = 256) -> None:
        self.app = app
        self.store_url = store_url
        self._routes = routes
        self.cache_s, self.audit_every_s = cache_s, audit_every_s
        self.max_concurrency, self.running = max_concurrency, 0
        self.development = os.environ.get(AUTH_ENV, "").lower() == "off"
        self._ready: tuple[Verifier, AuditBuffer] | None = None
        self._error: str | None = None
        self._error_at = 0.0
        if self.development:
            _log.warning("%s=off: development mode, no credential is asked; only loopback clients are answered",
                         AUTH_ENV)

    @property
    def routes(self) -> Routes:
        if callable(self._routes) and not isinstance(self._routes, Routes):
            self._routes = self._routes()
        return self._routes

    def _open(self) -> tuple[Verifier, AuditBuffer] | None:
        if self._ready is None and (self._error is None or time.monotonic() - self._error_at > RETRY_S):
            try:
                url = self.store_url() if callable(self.store_url) else self.store_url
                store = KeyStore(url)
                verifier = Verifier(store) if self.cache_s is None else Verifier(store, self.cache_s)
                self._ready = verifier, AuditBuffer(store, self.audit_every_s)
            except Exception as error:  # no key store: every guarded request says why (503), health still answers
                self._error, self._error_at = str(error), time.monotonic()
                _log.error("the key store cannot be opened: %s", error)
        return self._ready

    def close(self) -> None:
        """Write the audit entries kept and close the key store (a worker's end; tests)."""
        if self._ready is not None:
            self._ready[1].close()
            self._ready[0].store.dispose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope.get("type") != "http":  # no other protocol is served (a WebSocket is refused before its upgrade)
            await send({"type": "websocket.close", "code": 1008})
            return
        send = _secured(send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        match = self.routes.match(method, path)
        scope["biostream.route"] = match
        if match is not None and match.op.open:
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        if self.development:
            if client not in LOOPBACK:
                await _answer(send, 403, {"error": f"development mode ({AUTH_ENV}=off) answers loopback clients "
                                                   f"only; serve with keys (docs/security.md)"})
                return
            await self.app(scope, receive, send)  # the router answers a request matching nothing (404, 405)
            return
        ready = self._open()
        if ready is None:
            await _answer(send, 503, {"error": f"the service cannot check credentials: {self._error}"})
            return
        verifier, audit = ready
        entry = _entry(method, path, match, client)
        roles = match.op.roles if match is not None else ()
        needs = f"{entry['action']} needs a key with the role {' or '.join(roles)}" if roles else \
            "every endpoint but the open ones needs a key"
        token = _bearer(scope)
        allowed = self.routes.methods(path) if match is None else []
        if allowed and token is None:  # a declared path, another method (the public API document says which)
            await self._not_here(send, audit, entry, method, path, allowed)
            return
        if token is None:
            audit.add({**entry, "outcome": "denied", "status": 401})
            await _answer(send, 401, {"error": f"no credential: send the header 'Authorization: Bearer <key>'; "
                                               f"{needs}, which an admin creates with `biostream keys create --role "
                                               f"{roles[0] if roles else '<role>'}`"}, challenge=True)
            return
        key, why = verifier.check(token)
        if key is None:
            offered = OFFERED.match(token)
            audit.add({**entry, "key_id": offered.group(1) if offered else None, "outcome": "denied",
                       "status": 401})
            await _answer(send, 401, {"error": why}, challenge=True)
            return
        entry["key_id"], entry["role"] = key.key_id, key.role
        if match is None:  # nothing declared: denied by default, once the caller is known
            await self._not_here(send, audit, entry, method, path, allowed)
            return
        if key.role not in roles:
            audit.add({**entry, "outcome": "denied", "status": 403})
            await _answer(send, 403, {"error": f"key {key.key_id} has the role {key.role} ({ROLE_NOTE[key.role]}); "
                                               f"{entry['action']} needs the role {' or '.join(roles)}"})
            return
        if self.running >= self.max_concurrency:
            audit.add({**entry, "outcome": "denied", "status": 429})
            await _answer(send, 429, {"error": f"this worker is serving {self.running} requests, its most "
                                               f"(serve.max_concurrency): retry after 1 s"},
                          extra=[(b"retry-after", b"1")])
            return
        scope["biostream.key"] = key.key_id  # who acknowledges an alarm
        scope["biostream.beds"] = key.bed_prefixes  # the beds a gateway key may write (None: any)
        if match.op.handler == "audit":
            status, payload = self._audit(scope, verifier)
            audit.add({**entry, "outcome": "allowed", "status": status})
            await _answer(send, status, payload)
            return
        added: dict[str, str] = scope.setdefault("biostream.audit", {})
        status = [0]

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message.get("status", 0))
            await send(message)

        self.running += 1
        try:
            await self.app(scope, receive, sent)
        finally:
            self.running -= 1
            audit.add({**entry, **{k: v[:200] for k, v in added.items() if k in ("target", "detail")},
                       "outcome": "allowed", "status": status[0] or None})

    @staticmethod
    async def _not_here(send: Any, audit: AuditBuffer, entry: dict[str, Any], method: str, path: str,
                        allowed: list[str]) -> None:
        """No operation: 405 naming the methods declared for the path, else 404; audited."""
        from biostream.serving.asgi import no_operation

        status = 405 if allowed else 404
        audit.add({**entry, "outcome": "denied", "status": status})
        await _answer(send, status, {"error": no_operation(method, path, allowed)},
                      extra=[(b"allow", ", ".join(allowed).encode())] if allowed else [])

    @staticmethod
    def _audit(scope: dict[str, Any], verifier: Verifier) -> tuple[int, Any]:
        try:
            q = query_params(scope.get("query_string", b"").decode("latin-1"),
                             ("since", "key", "bed", "outcome", "limit"), "GET /audit")
            since = None if "since" not in q else time_text(q["since"], "since")
            limit = whole_number(q.get("limit", "1000"), "limit", 1, 10000, "entries")
            if "outcome" in q and q["outcome"] not in ("allowed", "denied"):
                raise ValueError(f"outcome is {q['outcome'][:20]!r}: ask for allowed or denied")
            if "key" in q and not re.fullmatch(r"[0-9a-f]{12}", q["key"]):
                raise ValueError(f"key is {q['key'][:20]!r}: a key id is 12 hexadecimal digits (`biostream keys "
                                 f"list`)")
            if len(q.get("bed", "")) > 200:
                raise ValueError(f"bed is {len(q['bed'])} characters: the trail keeps at most 200")
        except ValueError as error:  # ItemError is one
            return 400, {"error": str(error)}
        entries = verifier.store.audit(since, q.get("key"), q.get("bed"), q.get("outcome"), limit)
        return 200, {"entries": entries}


def _entry(method: str, path: str, match: Match | None, client: str) -> dict[str, Any]:
    """A request's audit entry before its outcome: the operation as declared, the bed it names (a hostile id kept
    escaped: no NUL or control character reaches the store) and what else it names (an episode)."""
    params = match.params if match is not None else {}
    bed = params.get("bed")
    target = None if bed is None else (bed if is_bed(bed) else ascii(bed))[:200] or None
    start = params.get("start")
    detail = None if start is None else (f"episode {start}" if start.isprintable() and start.isascii()
                                         else f"episode {ascii(start)}")[:200]
    action = match.op.action if match is not None else f"{method[:10]} {path[:60]}"
    return {"at": time.time(), "key_id": None, "role": None, "action": action[:40], "target": target,
            "client": client[:64], "status": None, "detail": detail}


def _secured(send: Any) -> Any:
    """An ASGI send that adds `SECURITY_HEADERS` to the answer (those it has already kept)."""

    async def secured(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            have = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []),
                                              *(h for h in SECURITY_HEADERS if h[0] not in have)]}
        await send(message)

    return secured


def add_security(doc: dict[str, Any], routes: Routes) -> dict[str, Any]:
    """The OpenAPI document with each operation's security read from its declaration (`routes`): the bearer-key
    scheme and the roles it needs, its 401, 403 and 429 (in place; returned); and `GET /audit`."""
    from biostream.serving.streaming.openapi import TIME_SCHEMA

    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerKey"] = {"type": "http", "scheme": "bearer", "bearerFormat": "bsk_<key id>_<secret>",
                            "description": "an API key with a role: " + "; ".join(f"{r}: {n}" for r, n in
                                                                                 ROLE_NOTE.items())}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    paths = doc.setdefault("paths", {})
    paths["/audit"] = {"get": {
        "tags": ["Security"], "operationId": "audit", "summary": "The audit trail (admin): who read or wrote what",
        "parameters": [
            {"name": "since", "in": "query", "required": False, "description": "entries at or after this time: "
             "ISO 8601 with a zone, or seconds since the epoch", "schema": TIME_SCHEMA},
            {"name": "key", "in": "query", "required": False, "description": "a key id",
             "schema": {"type": "string", "pattern": "^[0-9a-f]{12}$"}},
            {"name": "bed", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
            {"name": "outcome", "in": "query", "required": False, "schema": {"enum": ["allowed", "denied"]}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}}],
        "responses": {"200": {"description": "entries, oldest first", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"entries": {"type": "array", "items": {"type": "object"}}}}}}},
                      "400": {"description": "a bad query parameter, named",
                              "content": {"application/json": {"schema": error}}}}}}
    declared = {(op.method.lower(), op.path): op for op in routes}
    for path, operations in paths.items():
        for method, doc_op in operations.items():
            if not isinstance(doc_op, dict):
                continue
            op = declared.get((method, path))
            if op is None:
                raise ValueError(f"{method.upper()} {path} is in the API document but not declared "
                                 f"(biostream.serving.api.operations)")
            if op.open:
                doc_op["security"] = []
                continue
            roles = " or ".join(op.roles)
            doc_op["security"] = [{"bearerKey": []}]
            said = doc_op.get("description") or doc_op.get("summary") or ""
            doc_op["description"] = (said + "\n\n" if said else "") + f"Needs a key with the role {roles}."
            responses = doc_op.setdefault("responses", {})
            answer = {"content": {"application/json": {"schema": error}}}
            responses.setdefault("401", {"description": "no credential, or not a valid key (named)", **answer})
            responses.setdefault("403", {"description": f"a key whose role is not {roles}", **answer})
            responses.setdefault("429", {"description": "the worker serves its most requests at once "
                                                        "(serve.max_concurrency): retry after the seconds named",
                                         "headers": {"Retry-After": {"schema": {"type": "integer"}}}, **answer})
            if op.bodies:
                limits = ", ".join(f"{b.media}: {b.limit} bytes" for b in op.bodies)
                responses.setdefault("413", {"description": f"the body is over its limit ({limits})", **answer})
                responses.setdefault("415", {"description": "a Content-Type other than "
                                                            + " or ".join(b.media for b in op.bodies)
                                                            + ", or a charset other than UTF-8", **answer})
    return doc


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


async def _answer(send: Any, status: int, payload: Any, challenge: bool = False,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="biostream"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
