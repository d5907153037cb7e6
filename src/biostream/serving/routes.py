"""Every HTTP operation of the service, declared once (`Operation`): its method and path, the roles it needs, the
bodies it takes (media type, byte limit, who reads it) and who answers it. The guard authorises the operation
`Routes.match` finds and hands that match to the router (`biostream.serving.asgi.BodyTypes`), which runs it: one
match, so no path the guard reads one way can reach an endpoint the router reads another (a trailing or doubled
slash, a percent-encoded letter, another case: no operation, 404). Anything not declared is denied."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

OPEN: tuple[str, ...] = ()  # the roles of an operation any caller may use (health, the API's description)


@dataclass(frozen=True)
class Body:
    """A body an operation takes: its media type, byte limit (checked before it is read: 413) and the service
    method that reads it (None: BentoML parses it into the endpoint's declared input)."""

    media: str
    limit: int
    handler: str | None = None


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # a template: literal segments and `{name}` for a path parameter (one segment, as sent)
    roles: tuple[str, ...]
    handler: str | None = None  # the service method answering a body-less operation; None: BentoML's own route
    bodies: tuple[Body, ...] = ()
    files: bool = False  # a folder of static files under `path` (the Swagger UI's)
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.split("/")[1:]))

    @property
    def open(self) -> bool:
        return not self.roles

    @property
    def action(self) -> str:
        """How the audit trail names it."""
        return f"{self.method} {self.path}"[:40]

    def body(self, media: str) -> Body | None:
        return next((b for b in self.bodies if b.media == media), None)

    @property
    def max_body(self) -> int:
        """The largest body it takes (0: none; an empty or small body is still read and ignored)."""
        return max((b.limit for b in self.bodies), default=0)


class Match(NamedTuple):
    op: Operation
    params: dict[str, str]


class Routes:
    """The declared operations; `match` finds the one a request runs (exact literal segments; no normalising)."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        self.operations = tuple(operations)
        seen = set()
        for op in self.operations:
            key = (op.method, tuple("{}" if s.startswith("{") else s for s in op.segments))
            if key in seen:
                raise ValueError(f"{op.method} {op.path} is declared twice")
            seen.add(key)
            if op.method not in ("GET", "POST", "HEAD"):
                raise ValueError(f"{op.method} {op.path}: only GET, HEAD and POST operations are served")
            if op.method == "POST" and not op.bodies:
                raise ValueError(f"POST {op.path} declares no body and limit")

        # by method and number of segments: a request's path is split once and compared with a few templates
        self._exact = {(op.method, op.path): op for op in self.operations if not op.files and "{" not in op.path}
        self._index: dict[tuple[str, int], list[Operation]] = {}
        for op in self.operations:
            if not op.files and "{" in op.path:
                self._index.setdefault((op.method, len(op.segments)), []).append(op)
        self._files = [op for op in self.operations if op.files]

    def __iter__(self) -> Iterator[Operation]:
        return iter(self.operations)

    def match(self, method: str, path: str) -> Match | None:
        """The operation `method path` runs, with its path parameters; None if none is declared."""
        exact = self._exact.get((method, path))
        if exact is not None:
            return Match(exact, {})
        parts = path.split("/")
        if parts[0] == "":
            for op in self._index.get((method, len(parts) - 1), ()):
                params = _segments(op, parts)
                if params is not None:
                    return Match(op, params)
        for op in self._files:
            if op.method == method:
                params = _match(op, path)
                if params is not None:
                    return Match(op, params)
        return None

    def methods(self, path: str) -> list[str]:
        """The methods declared for `path` (a 405's Allow header)."""
        return sorted({op.method for op in self.operations if _match(op, path) is not None})


def _match(op: Operation, path: str) -> dict[str, str] | None:
    if op.files:
        prefix = op.path.rstrip("/") + "/"
        rest = path[len(prefix):]
        return {"file": rest} if path.startswith(prefix) and rest and ".." not in rest.split("/") else None
    parts = path.split("/")
    if parts[0] != "" or len(parts) - 1 != len(op.segments):
        return None
    return _segments(op, parts)


def _segments(op: Operation, parts: list[str]) -> dict[str, str] | None:
    """The path parameters of a split path (as many segments as `op`'s) that `op`'s template matches, or None."""
    params = {}
    for want, got in zip(op.segments, parts[1:], strict=True):
        if want.startswith("{"):  # as sent, even empty: its handler names what is wrong with it (400)
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params
