"""The service's ASGI middleware: a POST body is routed by its Content-Type before BentoML parses it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class BodyTypes:
    """ASGI middleware: a POST body is JSON (BentoML's endpoints), or, on the paths and media types given in
    `handlers`, a body that its own handler answers (an Arrow batch on /predict: `biostream.serving.arrow`; the
    stream messages of /ingest). Any other Content-Type gets 415 with the fix, before BentoML parses it (its
    multipart parser answers 500 to a multipart type without a boundary). No Content-Type reads as JSON.

    `handlers` maps (path, media type) to a function that returns the handler, an async callable body ->
    (status, JSON bytes or object); it is looked up per request (the service instance exists once the worker has
    started). `gets` maps a path prefix to a function returning an async callable (path, query string) ->
    (status, JSON): the GET endpoints BentoML does not declare; `posts` likewise the POST endpoints under a path
    prefix whose answer needs no body, an async callable (path, who) -> (status, JSON), `who` being the key id the
    guard let in (`scope["biostream.key"]`; "development" without keys).

    Every body has a byte limit, checked before anything parses it (413, naming the limit): `max_body_bytes` for
    the bodies of `handlers`, unless `limits` gives one for that (path, media type); `json_max_bytes` for the JSON
    bodies BentoML parses (None: not checked). A body declared longer (Content-Length) is refused unread; one sent
    in chunks is refused once it passes the limit.

    `openapi`: a function that adds what this middleware serves to the OpenAPI document BentoML answers on
    `GET /docs.json` (the endpoints of `handlers` and `gets` are not BentoML's, so it does not document them)."""

    def __init__(self, app: Any, handlers: Mapping[tuple[str, str], Callable[[], Any]] | None = None,
                 max_body_bytes: int = 64 << 20, json_max_bytes: int | None = None,
                 limits: Mapping[tuple[str, str], int] | None = None,
                 gets: Mapping[str, Callable[[], Any]] | None = None, limit_note: str = "",
                 openapi: Callable[[dict[str, Any]], Any] | None = None,
                 posts: Mapping[str, Callable[[], Any]] | None = None) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.max_body_bytes = max_body_bytes
        self.json_max_bytes = json_max_bytes
        self.limits = dict(limits or {})
        self.gets = dict(gets or {})
        self.posts = dict(posts or {})
        self.limit_note = limit_note
        self.openapi = openapi

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (self.openapi is not None and scope.get("type") == "http" and scope.get("method") == "GET"
                and scope.get("path") == "/docs.json"):
            await self.app(scope, receive, _amended(send, self.openapi))
            return
        if scope.get("type") == "http" and scope.get("method") == "GET" and self.gets:
            path = scope.get("path", "")
            for prefix, factory in self.gets.items():
                if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                    query = scope.get("query_string", b"").decode("latin-1")
                    await _send_json(send, *await _guarded(factory, path, query))
                    return
        if scope.get("type") == "http" and scope.get("method") == "POST" and self.posts:
            path = scope.get("path", "")
            for prefix, factory in self.posts.items():
                if path.startswith(prefix.rstrip("/") + "/"):
                    who = scope.get("biostream.key") or "development"
                    await _send_json(send, *await _guarded(factory, path, who))
                    return
        if scope.get("type") == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
            path = scope.get("path", "")
            handler = self.handlers.get((path, media))
            if handler is not None:
                limit = self.limits.get((path, media), self.max_body_bytes)
                body = await self._body(headers, receive, limit)
                if body is _GONE:
                    return
                if body is None:
                    await _send_json(send, 413, {"error": self._too_long(path, media, limit)})
                    return
                await _send_json(send, *await _guarded(handler, body))
                return
            if media not in ("application/json", ""):
                accepted = ["application/json"] + sorted(m for p, m in self.handlers if p == path)
                await _send_json(send, 415, {"error": f"Content-Type '{media}' is not supported here: send the "
                                                      f"request body as {' or '.join(accepted)}"})
                return
            if self.json_max_bytes is not None:
                body = await self._body(headers, receive, self.json_max_bytes)
                if body is _GONE:
                    return
                if body is None:
                    await _send_json(send, 413, {"error": self._too_long(path, media, self.json_max_bytes)})
                    return
                await self.app(scope, _replay(body, receive), send)
                return
        await self.app(scope, receive, send)

    def _too_long(self, path: str, media: str, limit: int) -> str:
        if (path, media) in self.handlers and (path, media) not in self.limits:
            return f"the body is over {limit} bytes: send at most serve.max_batch_windows windows per request"
        return (f"the body is over {limit} bytes, the limit for {path} ({self.limit_note or 'the service'}): "
                f"split it into smaller requests" + (", or send a batch of windows as Arrow"
                                                     if path == "/predict" else ""))

    async def _body(self, headers: Mapping[bytes, bytes], receive: Any, limit: int) -> bytes | object | None:
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


async def _guarded(factory: Callable[[], Any], *args: Any) -> tuple[int, Any]:
    """A handler's answer; a fault of ours (not of the request) is logged and answered as BentoML answers it."""
    try:
        return await factory()(*args)
    except Exception:
        _log.exception("handler %s failed", getattr(factory, "__name__", factory))
        return 500, {"error": "An unexpected error has occurred, please check the server log."}


def _amended(send: Any, amend: Callable[[dict[str, Any]], Any]) -> Any:
    """An ASGI send that holds a JSON answer until its last chunk, lets `amend` change the document, then sends it
    whole (a new Content-Length). An answer that is not a 200 JSON document passes unchanged."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def amended(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
            return
        if message["type"] != "http.response.body" or not start:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        if start.get("status") == 200:
            try:
                doc = json.loads(body)
                amend(doc)
                body = json.dumps(doc).encode()
            except ValueError:
                _log.exception("the OpenAPI document could not be amended; served as BentoML made it")
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return amended


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


_GONE = object()  # `BodyTypes._body`: the client went away
_log = logging.getLogger("biostream")


@dataclass(frozen=True)
class Document:
    """An answer that is not JSON (a page, a report): its bytes, media type and, for a download, a file name."""

    body: bytes
    media: str
    filename: str | None = None


async def _send_json(send: Any, status: int, payload: Any) -> None:
    """Send a whole JSON answer (bytes are sent as they are; a `Document` with its own media type)."""
    media, extra = b"application/json", []
    if isinstance(payload, Document):
        media, body = payload.media.encode(), payload.body
        if payload.filename:
            extra.append((b"content-disposition", f'inline; filename="{payload.filename}"'.encode()))
        extra.append((b"cache-control", b"no-store"))  # patient data (a report) is not kept by browsers or proxies
    else:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
