"""The service's ASGI middleware: a POST body is routed by its Content-Type before BentoML parses it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any


class BodyTypes:
    """ASGI middleware: a POST body is JSON (BentoML's endpoints), or, on the paths and media types given in
    `handlers`, a body that its own handler answers (an Arrow batch on /predict: `biostream.serving.arrow`).
    Any other Content-Type gets 415 with the fix, before BentoML parses it (its multipart parser answers 500 to
    a multipart type without a boundary). No Content-Type reads as JSON.

    `handlers` maps (path, media type) to a function that returns the handler, an async callable body ->
    (status, JSON bytes); it is looked up per request (the service instance exists once the worker has
    started). A body over `max_body_bytes` gets 413."""

    def __init__(self, app: Any, handlers: Mapping[tuple[str, str], Callable[[], Any]] | None = None,
                 max_body_bytes: int = 64 << 20) -> None:
        self.app = app
        self.handlers = dict(handlers or {})
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST":
            headers = dict(scope.get("headers") or [])
            media = headers.get(b"content-type", b"application/json").decode("latin-1").split(";")[0].strip().lower()
            handler = self.handlers.get((scope.get("path", ""), media))
            if handler is not None:
                body = await self._body(headers, receive)
                if body is _GONE:
                    return
                if body is None:
                    await _send_json(send, 413, {"error": f"the body is over {self.max_body_bytes} bytes: send at "
                                                          f"most serve.max_batch_windows windows per request"})
                    return
                try:
                    status, answer = await handler()(body)
                except Exception:  # a fault of ours, not of the request: logged, answered as BentoML answers it
                    _log.exception("%s %s failed", media, scope.get("path"))
                    status, answer = 500, {"error": "An unexpected error has occurred, please check the server log."}
                await _send_json(send, status, answer)
                return
            if media not in ("application/json", ""):
                accepted = ["application/json"] + sorted(m for p, m in self.handlers if p == scope.get("path"))
                await _send_json(send, 415, {"error": f"Content-Type '{media}' is not supported here: send the "
                                                      f"request body as {' or '.join(accepted)}"})
                return
        await self.app(scope, receive, send)

    async def _body(self, headers: Mapping[bytes, bytes], receive: Any) -> bytes | object | None:
        """The whole body; None once it is longer than `max_body_bytes`; `_GONE` if the client went away."""
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


_GONE = object()  # `BodyTypes._body`: the client went away
_log = logging.getLogger("biostream")


async def _send_json(send: Any, status: int, payload: Any) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
