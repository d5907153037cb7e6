"""Adaptive batching that never waits: requests that arrive while the model is busy are scored together in
its next call; an idle model scores a request at once.

Why not BentoML's own (`@bentoml.api(batchable=True)`): its dispatcher holds each request back for the
average wait of recent batches, and that average counts the time requests queued behind a busy model. After
a burst of batched traffic (4 clients x 64 windows for 5 s) it held single windows back ~35 ms each, and the
estimate decays only ~5 % per refresh (one per 5 s at most): minutes of 15x latency for a gateway that
sends one window at a time (`benchmarks/bench_service.py` measures single windows before and after its
throughput runs). Here the batch size follows the load by itself: whatever queued during the last call.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio.to_thread

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    """Calls `fn(items) -> results` (one result per item, in order) in a worker thread, one call at a time, on
    the items of every request queued since the last call (up to `max_items`; a request is never split).
    `submit` is awaited on the event loop that serves the requests; an exception in `fn` fails the requests
    of that call only. A request that has queued longer than `max_wait_s` when its turn comes fails with
    `overloaded(waited_s)` instead (the server is behind: say so rather than answer late)."""

    def __init__(self, fn: Callable[[Sequence[In]], Sequence[Out]], max_items: int, max_wait_s: float,
                 overloaded: Callable[[float], Exception]) -> None:
        if max_items < 1 or max_wait_s <= 0:
            raise ValueError(f"max_items must be >= 1 and max_wait_s > 0, got {max_items} and {max_wait_s}")
        self.fn = fn
        self.max_items = max_items
        self.max_wait_s = max_wait_s
        self.overloaded = overloaded
        self._queue: deque[tuple[Sequence[In], asyncio.Future[list[Out]], float]] = deque()
        self._running = False

    async def submit(self, items: Sequence[In]) -> list[Out]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Out]] = loop.create_future()
        self._queue.append((items, future, loop.time()))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Sequence[In], asyncio.Future[list[Out]]]]:
        """The next call's requests, oldest first; those whose client has gone or that waited too long leave."""
        now = asyncio.get_running_loop().time()
        taken: list[tuple[Sequence[In], asyncio.Future[list[Out]]]] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0][0]) <= self.max_items):
            items, future, queued = self._queue.popleft()
            if future.done():  # cancelled: the client went away
                continue
            if now - queued > self.max_wait_s:
                future.set_exception(self.overloaded(now - queued))
                continue
            taken.append((items, future))
            size += len(items)
        return taken

    async def _drain(self) -> None:
        try:
            while self._queue:
                taken = self._take()
                if not taken:
                    continue
                flat = [x for items, _ in taken for x in items]
                try:
                    results: Any = await anyio.to_thread.run_sync(self.fn, flat)
                    if len(results) != len(flat):
                        raise RuntimeError(f"batch function returned {len(results)} results for {len(flat)} items")
                except Exception as error:  # noqa: BLE001 - handed to the waiting requests, which raise it
                    for _, f in taken:
                        if not f.done():
                            f.set_exception(error)
                    continue
                start = 0
                for items, f in taken:
                    if not f.done():
                        f.set_result(list(results[start : start + len(items)]))
                    start += len(items)
        finally:
            self._running = False
