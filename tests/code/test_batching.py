"""`biostream.serving.batching.Batcher` on a real event loop and real worker threads."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from biostream.serving.batching import Batcher


class Overloaded(Exception):
    pass


def _batcher(fn, max_items=8, max_wait_s=5.0) -> Batcher:
    return Batcher(fn, max_items=max_items, max_wait_s=max_wait_s, overloaded=lambda s: Overloaded(f"{s:.3f}"))


def test_an_idle_batcher_scores_a_request_at_once():
    calls = []

    def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        b = _batcher(double)
        start = time.perf_counter()
        out = await b.submit([1, 2, 3])
        return out, time.perf_counter() - start

    out, took = asyncio.run(main())
    assert out == [2, 4, 6] and calls == [[1, 2, 3]]  # one call
    assert took < 0.5  # no waiting for company (a thread hop only)


def test_requests_that_arrive_while_busy_share_the_next_call_and_get_their_own_answers():
    release = threading.Event()
    calls = []

    def slow_square(items):
        calls.append(list(items))
        if len(calls) == 1:
            release.wait(5)  # the first call holds the model while the others queue
        return [x * x for x in items]

    async def main():
        b = _batcher(slow_square, max_items=5)
        first = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.05)  # the first call is running
        rest = [asyncio.create_task(b.submit([10 * k, 10 * k + 1])) for k in range(1, 5)]
        await asyncio.sleep(0.05)
        release.set()
        return await first, [await r for r in rest]

    first, rest = asyncio.run(main())
    assert first == [1]
    assert rest == [[100, 121], [400, 441], [900, 961], [1600, 1681]]
    # 4 queued requests of 2 items, at most 5 items a call (a request is never split): 2 calls after the first
    assert calls == [[1], [10, 11, 20, 21], [30, 31, 40, 41]]


def test_a_failing_call_fails_its_requests_only_and_the_batcher_goes_on():
    def fn(items):
        if "bad" in items:
            raise ValueError("cannot score 'bad'")
        return [s.upper() for s in items]

    async def main():
        b = _batcher(fn)
        with pytest.raises(ValueError, match="cannot score 'bad'"):
            await b.submit(["ok", "bad"])
        return await b.submit(["fine"])

    assert asyncio.run(main()) == ["FINE"]


def test_a_wrong_number_of_results_is_an_error_not_a_misrouted_answer():
    async def main():
        return await _batcher(lambda items: items[:-1]).submit([1, 2])

    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        asyncio.run(main())


def test_a_request_queued_longer_than_max_wait_is_refused_as_overload():
    release = threading.Event()

    def fn(items):
        release.wait(5)
        return items

    async def main():
        b = _batcher(fn, max_wait_s=0.05)
        first = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.02)
        late = asyncio.create_task(b.submit([2]))
        await asyncio.sleep(0.15)  # `late` has now queued longer than 0.05 s behind the busy model
        release.set()
        assert await first == [1]
        with pytest.raises(Overloaded):
            await late
        return await b.submit([3])  # idle again: served

    assert asyncio.run(main()) == [3]


def test_an_empty_request_needs_no_call_and_bad_settings_are_refused():
    calls = []

    async def main():
        return await _batcher(lambda items: calls.append(items) or items).submit([])

    assert asyncio.run(main()) == [] and calls == []
    with pytest.raises(ValueError, match="max_items must be >= 1"):
        _batcher(lambda items: items, max_items=0)
