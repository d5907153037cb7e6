"""The ASGI guard in front of every endpoint of the service (`Guard`): a credential with a role allowed on the
endpoint (`policy`), else 401 or 403, before anything else reads the request; every request that presents itself
leaves an entry in the audit trail (`AuditBuffer`). Roles, keys and the trail: docs/security.md.

Development mode (`BIOSTREAM_AUTH=off`): no credential is asked, and only loopback clients are answered."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from biostream.serving.security.keys import ROLE_NOTE, ROLES, KeyStore, Verifier
from biostream.serving.streaming.messages import is_bed, query_params, time_text, whole_number

AUTH_ENV = "BIOSTREAM_AUTH"
OPEN = frozenset({"/healthz", "/livez", "/readyz", "/", "/docs", "/docs.json", "/schema.json",
                  "/board"})  # the board's page: no patient data in it; it reads GET /beds with the clinician's key
OPEN_PREFIXES = ("/static_content/", "/assets/")  # the Swagger UI's files
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
RETRY_S = 5.0  # a key store that could not be opened is tried again after this long (no restart needed)
MAX_KEPT = 100_000  # audit entries kept in memory while the store refuses them; the oldest go first, logged
_log = logging.getLogger("biostream")


def policy(method: str, path: str) -> tuple[tuple[str, ...], str, str | None]:
    """The roles allowed on a request, the action as the audit trail names it, and the bed it reads (if any)."""
    if method == "POST" and path == "/ingest":
        return ("gateway",), "POST /ingest", None
    if path.startswith("/beds/"):
        parts = path.split("/")
        tail = "/".join(parts[3:]) if len(parts) > 3 else ""
        bed = parts[2]  # as asked: the trail keeps an id that is not one escaped (no NUL or control character)
        target = (bed if is_bed(bed) else ascii(bed))[:200] or None
        if len(parts) == 6 and parts[3] == "episodes" and parts[5] == "ack":  # the episode: in the entry's detail
            return ("clinician",), "POST /beds/{bed}/episodes/{start}/ack", target
        return ("clinician",), f"{method} /beds/{{bed}}/{tail}"[:40], target
    if path in ("/alarms", "/beds"):
        return ("clinician",), f"{method} {path}", None
    if path == "/monitoring":
        return ("clinician", "admin"), f"{method} /monitoring", None
    if path in ("/predict", "/score_series"):
        return ("integrator",), f"{method} {path}", None
    if path == "/explain":
        return ("integrator", "clinician"), f"{method} /explain", None
    if path in ("/metrics", "/audit"):
        return ("admin",), f"{method} {path}", None
    return ROLES, f"{method} {path[:60]}", None  # any other path (/metadata, a 404): any valid key


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
    """ASGI middleware: a credential (`Authorization: Bearer <key>`) with a role allowed on the endpoint, else 401
    (none, or not a valid key) or 403 (a role not allowed), each naming what is missing, before anything else reads
    the request; so no answer tells a caller who may not read a bed whether that bed exists. Every request that
    presents itself (allowed or denied) leaves an entry in the audit trail, written in the background once a second
    (`AuditBuffer`); `GET /audit` reads the trail (admin), nothing changes it.

    Open without a credential: `/healthz`, `/livez`, `/readyz` (an orchestrator's probes) and the API's description
    (`/docs.json`, `/schema.json` and the Swagger UI at `/`: no patient data, and whether a bed exists is not in
    them; integrators' tools and the UI's own page read the document before any key is entered).

    `store_url`: the key store (the stream store's database)."""

    def __init__(self, app: Any, store_url: str | Callable[[], str], cache_s: float | None = None,
                 audit_every_s: float = 1.0) -> None:
        self.app = app
        self.store_url = store_url
        self.cache_s, self.audit_every_s = cache_s, audit_every_s
        self.development = os.environ.get(AUTH_ENV, "").lower() == "off"
        self._ready: tuple[Verifier, AuditBuffer] | None = None
        self._error: str | None = None
        self._error_at = 0.0
        if self.development:
            _log.warning("%s=off: development mode, no credential is asked; only loopback clients are answered",
                         AUTH_ENV)

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
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if path in OPEN or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("", 0))[0]
        if self.development:
            if client not in LOOPBACK:
                await _answer(send, 403, {"error": f"development mode ({AUTH_ENV}=off) answers loopback clients "
                                                   f"only; serve with keys (docs/security.md)"})
                return
            await self.app(scope, receive, send)
            return
        ready = self._open()
        if ready is None:
            await _answer(send, 503, {"error": f"the service cannot check credentials: {self._error}"})
            return
        verifier, audit = ready
        roles, action, target = policy(method, path)
        entry = {"at": time.time(), "key_id": None, "role": None, "action": action, "target": target,
                 "client": client[:64], "status": None, "detail": _detail(method, path)}
        token = _bearer(scope)
        if token is None:
            entry["outcome"] = "denied"
            audit.add({**entry, "status": 401})
            await _answer(send, 401, {"error": f"no credential: send the header 'Authorization: Bearer <key>'; "
                                               f"{action} needs a key with the role {' or '.join(roles)}, which an "
                                               f"admin creates with `biostream keys create --role {roles[0]}`"},
                          challenge=True)
            return
        key, why = verifier.check(token)
        if key is None:
            entry["outcome"] = "denied"
            audit.add({**entry, "status": 401})
            await _answer(send, 401, {"error": why}, challenge=True)
            return
        entry["key_id"], entry["role"] = key.key_id, key.role
        scope["biostream.key"] = key.key_id  # who acknowledges an alarm (`BodyTypes` posts)
        if key.role not in roles:
            audit.add({**entry, "outcome": "denied", "status": 403})
            await _answer(send, 403, {"error": f"key {key.key_id} has the role {key.role} ({ROLE_NOTE[key.role]}); "
                                               f"{action} needs the role {' or '.join(roles)}"})
            return
        if path == "/audit":
            status, payload = self._audit(method, scope, verifier)
            audit.add({**entry, "outcome": "allowed", "status": status})
            await _answer(send, status, payload)
            return
        status = [0]

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            audit.add({**entry, "outcome": "allowed", "status": status[0] or None})

    @staticmethod
    def _audit(method: str, scope: dict[str, Any], verifier: Verifier) -> tuple[int, Any]:
        if method != "GET":
            return 405, {"error": "the audit trail is append-only: GET /audit reads it; nothing changes it"}
        try:
            q = query_params(scope.get("query_string", b"").decode("latin-1"),
                             ("since", "key", "bed", "outcome", "limit"), "GET /audit")
            since = None if "since" not in q else time_text(q["since"], "since")
            limit = whole_number(q.get("limit", "1000"), "limit", 1, 10000, "entries")
        except ValueError as error:  # ItemError is one
            return 400, {"error": str(error)}
        entries = verifier.store.audit(since, q.get("key"), q.get("bed"), q.get("outcome"), limit)
        return 200, {"entries": entries}


def add_security(doc: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the bearer-key scheme on every guarded operation (with its 401 and 403), and
    `GET /audit` (in place; returned)."""
    schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearerKey"] = {"type": "http", "scheme": "bearer", "bearerFormat": "bsk_<key id>_<secret>",
                            "description": "an API key with a role: " + "; ".join(f"{r}: {n}" for r, n in
                                                                                 ROLE_NOTE.items())}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    paths = doc.setdefault("paths", {})
    paths["/audit"] = {"get": {
        "tags": ["Security"], "operationId": "audit", "summary": "The audit trail (admin): who read or wrote what",
        "parameters": [
            {"name": "since", "in": "query", "required": False, "description": "ISO 8601 with a zone, or seconds "
             "since the epoch", "schema": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
            {"name": "key", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 12}},
            {"name": "bed", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200}},
            {"name": "outcome", "in": "query", "required": False, "schema": {"enum": ["allowed", "denied"]}},
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 1000}}],
        "responses": {"200": {"description": "entries, oldest first", "content": {"application/json": {"schema": {
            "type": "object", "properties": {"entries": {"type": "array", "items": {"type": "object"}}}}}}},
                      "400": {"description": "a bad query parameter, named",
                              "content": {"application/json": {"schema": error}}}}}}
    for path, operations in paths.items():
        for method, op in operations.items():
            if not isinstance(op, dict):
                continue
            if path in OPEN:
                op["security"] = []
                continue
            roles = policy(method.upper(), path.replace("{bed}", "bed-1"))[0]
            op["security"] = [{"bearerKey": []}]
            said = op.get("description") or op.get("summary") or ""
            op["description"] = (said + "\n\n" if said else "") + f"Needs a key with the role {' or '.join(roles)}."
            responses = op.setdefault("responses", {})
            responses.setdefault("401", {"description": "no credential, or not a valid key (named)",
                                         "content": {"application/json": {"schema": error}}})
            responses.setdefault("403", {"description": f"a key whose role is not {' or '.join(roles)}",
                                         "content": {"application/json": {"schema": error}}})
    return doc


def _detail(method: str, path: str) -> str | None:
    """What the trail keeps beyond the bed: the episode an acknowledgement names (escaped as `policy` does ids)."""
    parts = path.split("/")
    if len(parts) == 6 and parts[1] == "beds" and parts[3] == "episodes" and parts[5] == "ack":
        start = parts[4]
        return (f"episode {start}" if start.isprintable() and start.isascii() else f"episode {ascii(start)}")[:200]
    return None


def _bearer(scope: dict[str, Any]) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else ""
    return None


async def _answer(send: Any, status: int, payload: Any, challenge: bool = False) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge:
        headers.append((b"www-authenticate", b'Bearer realm="biostream"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

