"""The service's router (`Router`): it runs the operation the guard matched (`biostream.serving.routes`), reading
each body against that operation's media types and byte limits before anything parses it."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from biostream.serving.errors import message
from biostream.serving.routes import Match, Routes

JSON = "application/json"


@dataclass
class Call:
    """A request as a handler reads it: its path parameters, query string, body (POST) and media type, the key id
    the guard let in (`who`: "development" without keys) and the bed-id prefixes that key may write (None: any);
    `audit`: what the handler adds to the request's audit entry (`target`, `detail`)."""

    params: dict[str, str]
    query: str = ""
    body: bytes = b""
    media: str = JSON
    who: str = "development"
    beds: tuple[str, ...] | None = None
    audit: dict[str, str] = field(default_factory=dict)


class Router:
    """ASGI middleware: runs the operation the guard matched (`scope["biostream.route"]`; matched here with the same
    `routes` when no guard runs, as in development). An operation's handler (`Operation.handler`, or a body's
    `Body.handler`) is looked up per request by `handler(name)` (the service instance exists once the worker has
    started) and answers `(status, JSON-able, bytes or a Document)`; an operation without one is BentoML's own route.
    Nothing undeclared is run: 404, or 405 with the methods declared.

    A POST body must be of a media type its operation declares (no Content-Type reads as JSON; a charset other than
    UTF-8 is refused: 415) and within that body's byte limit, checked before anything parses it (413, naming the
    limit; a body declared longer is refused unread, one sent in chunks once it passes the limit).

    `openapi`: a function that adds what BentoML does not declare to the document it answers on `GET /docs.json`."""

    def __init__(self, app: Any, routes: Routes | Callable[[], Routes], handler: Callable[[str], Any],
                 limit_note: str = "", openapi: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.app = app
        self._routes = routes
        self.handler = handler
        self.limit_note = limit_note
        self.openapi = openapi

    @property
    def routes(self) -> Routes:
        if callable(self._routes) and not isinstance(self._routes, Routes):
            self._routes = self._routes()
        return self._routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        match: Match | None = scope.get("biostream.route") or self.routes.match(method, path)
        if match is None:
            allowed = self.routes.methods(path)
            await send_json(send, 405 if allowed else 404, {"error": no_operation(method, path, allowed)},
                            [(b"allow", ", ".join(allowed).encode())] if allowed else [])
            return
        op = match.op
        if self.openapi is not None and method == "GET" and path == "/docs.json":
            await self.app(scope, receive, _amended(send, self.openapi))
            return
        call = Call(match.params, scope.get("query_string", b"").decode("latin-1"),
                    who=scope.get("biostream.key") or "development", beds=scope.get("biostream.beds"),
                    audit=scope.setdefault("biostream.audit", {}))
        if method == "POST":
            headers = dict(scope.get("headers") or [])
            media, charset = content_type(headers.get(b"content-type", b"").decode("latin-1"))
            body_of = op.body(media)
            if body_of is None or charset not in (None, "utf-8"):
                accepted = " or ".join(b.media for b in op.bodies)
                why = (f"charset {charset[:20]!r}: send the body in UTF-8" if body_of is not None else
                       f"Content-Type '{media[:60]}' is not supported here: send the request body as {accepted}")
                await send_json(send, 415, {"error": why})
                return
            body = await read_body(headers, receive, body_of.limit)
            if body is _GONE:
                return
            if body is None:
                await send_json(send, 413, {"error": self._too_long(path, media, body_of.limit)})
                return
            if body_of.handler is None:  # BentoML parses it (its refusals answered as ours: one `error`)
                await self.app(scope, _replay(body, receive), one_error(send))
                return
            call.body, call.media = body, media
            await send_json(send, *await _guarded(self.handler, body_of.handler, call))
            return
        if op.handler is None:
            await self.app(scope, receive, one_error(send))
            return
        await send_json(send, *await _guarded(self.handler, op.handler, call))

    def _too_long(self, path: str, media: str, limit: int) -> str:
        if path == "/predict" and media != JSON:
            return f"the body is over {limit} bytes: send at most serve.max_batch_windows windows per request"
        return (f"the body is over {limit} bytes, the limit for {path} ({self.limit_note or 'the service'}): "
                f"split it into smaller requests" + (", or send a batch of windows as Arrow"
                                                     if path == "/predict" else ""))


def no_operation(method: str, path: str, allowed: list[str]) -> str:
    shown = path[:120] + ("..." if len(path) > 120 else "")
    if allowed:
        return f"{method[:10]} is not served on {shown!r}: it takes {', '.join(allowed)}"
    return (f"no endpoint {method[:10]} {shown!r} (paths are exact: no trailing or doubled slash, lower case); "
            f"GET /docs.json lists them")


def content_type(value: str) -> tuple[str, str | None]:
    """A Content-Type header's media type (lower case; none: JSON) and its charset (None: not given)."""
    media, *params = value.split(";")
    charset = None
    for param in params:
        name, _, val = param.partition("=")
        if name.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    return media.strip().lower() or JSON, charset


async def read_body(headers: Mapping[bytes, bytes], receive: Any, limit: int) -> bytes | object | None:
    """The whole body; None once it is longer than `limit`; `_GONE` if the client went away."""
    declared = headers.get(b"content-length", b"").decode("latin-1")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _guarded(handler: Callable[[str], Any], name: str, call: Call) -> tuple[int, Any]:
    """A handler's answer; a fault of ours (not of the request) is logged and answered as BentoML answers it. A
    request that needs more memory than the worker's cap allows fails alone (`biostream.serving.memory`)."""
    try:
        return await handler(name)(call)
    except MemoryError:
        _log.warning("handler %s: the request needed more memory than the worker's cap (serve.worker_memory_mb)",
                     name)
        return 413, {"error": "this request needs more memory than a worker may use (serve.worker_memory_mb): "
                              "send it in smaller parts"}
    except Exception:
        _log.exception("handler %s failed", name)
        return 500, {"error": "An unexpected error has occurred, please check the server log."}


def _amended(send: Any, amend: Callable[[dict[str, Any]], Any]) -> Any:
    """An ASGI send whose 200 JSON document `amend` changes (an answer that is not one passes unchanged)."""

    def change(body: bytes) -> bytes:
        try:
            doc = json.loads(body)
            amend(doc)
            return json.dumps(doc).encode()
        except ValueError:
            _log.exception("the OpenAPI document could not be amended; served as BentoML made it")
            return body

    return _rewritten(send, lambda status: status == 200, change)


def one_error(send: Any) -> Any:
    """An ASGI send that answers BentoML's refusals (status >= 400) as ours: `{"error": "..."}`
    (`biostream.serving.errors.message`); any other answer passes as it comes."""

    def change(body: bytes) -> bytes:
        try:
            said = message(json.loads(body))
        except ValueError:
            said = None
        return body if said is None else json.dumps({"error": said}).encode()

    return _rewritten(send, lambda status: status >= 400, change)


def _rewritten(send: Any, holds: Callable[[int], bool], change: Callable[[bytes], bytes]) -> Any:
    """An ASGI send that holds an answer whose status `holds` until its last chunk, then sends `change(body)` whole
    with its new Content-Length; any other answer passes as it comes."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def rewritten(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            if not holds(int(msg.get("status", 200))):
                await send(msg)
                return
            start.update(msg)
            return
        if not start or msg["type"] != "http.response.body":
            await send(msg)
            return
        chunks.append(msg.get("body", b""))
        if msg.get("more_body", False):
            return
        body = change(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return rewritten


def _replay(body: bytes, receive: Any) -> Any:
    """An ASGI receive that hands the app the body already read, then waits on the client (a disconnect)."""
    done = False

    async def replay() -> dict[str, Any]:
        nonlocal done
        if not done:
            done = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


_GONE = object()  # `read_body`: the client went away
_log = logging.getLogger("biostream")


@dataclass(frozen=True)
class Document:
    """An answer that is not JSON (a page, a report): its bytes, media type and, for a download, a file name."""

    body: bytes
    media: str
    filename: str | None = None
    csp: str | None = None  # its Content-Security-Policy (None: DOCUMENT_CSP)


def strict_json(payload: Any) -> bytes:
    """JSON every parser reads: a NaN or an infinity (which Python's json writes as the non-JSON `NaN`/`Infinity`)
    becomes null."""
    try:
        return json.dumps(payload, allow_nan=False).encode()
    except ValueError:
        return json.dumps(_finite(payload), allow_nan=False).encode()


def _finite(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


# a page or report of patient data: nothing runs in it but its own script, nothing frames it, nothing is fetched
# from elsewhere (the board's inline script is allowed by its hash: biostream.serving.board.CSP)
DOCUMENT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data: blob:; frame-ancestors 'none'; "
                "base-uri 'none'; form-action 'none'")


async def send_json(send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a whole JSON answer (bytes are sent as they are; a `Document` with its own media type)."""
    media, extra = b"application/json", list(extra or [])
    if isinstance(payload, Document):
        media, body = payload.media.encode(), payload.body
        if payload.filename:
            extra.append((b"content-disposition", f'inline; filename="{payload.filename}"'.encode()))
        extra.append((b"cache-control", b"no-store"))  # patient data (a report) is not kept by browsers or proxies
        extra.append((b"content-security-policy", (payload.csp or DOCUMENT_CSP).encode()))
    else:
        body = payload if isinstance(payload, bytes) else strict_json(payload)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
