"""The scale path of bedside streams on the real Redis and PostgreSQL of these machines: consumers in their own
processes, one SIGKILLed in the middle of a stream; nothing is lost or stored twice, and the episodes are those
of an uninterrupted run. These tests fail (not skip) when Redis or PostgreSQL is not reachable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.redis_path import Consumer, publish, shard_of
from biostream.serving.streaming.store import Store, sqlite_url
from tests.conftest import ROOT
from tests.model.conftest import scorer_for
from tests.model.test_streams import START, params, series_answer
from tests.pipeline.conftest import scratch_database

pytestmark = pytest.mark.services  # the local PostgreSQL and Redis servers

REDIS = "redis://127.0.0.1:6379/0"
BEDS, SECONDS, SHARDS = 6, 400, 4


@pytest.fixture
def redis_prefix():
    """A real Redis connection and a key prefix of this test's own (its keys deleted after)."""
    import redis

    r = redis.Redis.from_url(REDIS)
    try:
        r.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS} ({exc}); the stream scale-path tests need the local server "
                    "these machines run (start it, e.g. `service redis-server start`)", pytrace=False)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    yield r, prefix
    keys = list(r.scan_iter(f"{prefix}:*"))
    if keys:
        r.delete(*keys)


def _consumer(tmp_path, store, prefix, name, idle_exit_s=None):
    cmd = [sys.executable, "-m", "biostream.serving.streaming.redis_path", "--redis", REDIS, "--store", store,
           "--prefix", prefix, "--name", name, "--bundle", str(tmp_path / "bundle"), "--spec",
           str(tmp_path / "spec.json"), "--lease-ms", "1500"]
    if idle_exit_s is not None:
        cmd += ["--idle-exit-s", str(idle_exit_s)]
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")}), log


def test_a_consumer_killed_mid_stream_loses_and_doubles_nothing(fitted, model_data, configs, tmp_path, redis_prefix):
    r, prefix = redis_prefix
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    scorer.bundle.save(tmp_path / "bundle")
    spec = dict(scorer.spec.to_dict(), stream=params("unused", shards=SHARDS).to_dict())
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    vitals = model_data.dataset.vitals
    pids = sorted(model_data.evaluation["patient_id"].unique())[:BEDS]
    recs = {p: vitals[vitals["patient_id"] == p][list(scorer.spec.signals)].to_numpy()[:SECONDS].T.astype(float)
            for p in pids}
    # what a gateway publishes: every second, each bed's newest second (one entry per shard)
    messages = [[{"bed": p, "start": START + t, "vitals": {s: [None if np.isnan(x) else float(x)]
                                                           for s, x in zip(scorer.spec.signals, recs[p][:, t],
                                                                           strict=True)}} for p in pids]
                for t in range(SECONDS)]
    # the uninterrupted run: one engine, in process, on its own store
    ref = StreamEngine(scorer, Store(sqlite_url(tmp_path / "ref.db")), params("x", shards=SHARDS))
    for t in range(SECONDS):
        ref.ingest([Chunk(p, START + t, recs[p][:, t:t + 1].copy()) for p in pids], now=float(t))
    ref.close(pids)
    with scratch_database("biostream_streams") as url:
        Store(url).dispose()  # tables made before the consumers race for them
        for items in messages:
            publish(r, prefix, items, SHARDS)
        store = Store(url)
        a, log_a = _consumer(tmp_path, url, prefix, "a")
        total = BEDS * SECONDS
        deadline = time.monotonic() + 240
        while store.count_seconds() < total // 3:
            assert a.poll() is None, (tmp_path / "a.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "consumer a scored too little in 240 s"
            time.sleep(0.05)
        a.send_signal(signal.SIGKILL)
        a.wait()
        log_a.close()
        killed_at = store.count_seconds()
        assert killed_at < total, "consumer a was killed before the end of the stream"
        b, log_b = _consumer(tmp_path, url, prefix, "b", idle_exit_s=5)
        assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()[-3000:]
        log_b.close()
        pending = [r.xpending(f"{prefix}:in:{k}", "score")["pending"] for k in range(SHARDS)]
        assert pending == [0] * SHARDS, "every entry acknowledged"
        for p in pids:
            got = store.seconds(p, limit=10 ** 6)
            want = ref.store.seconds(p, limit=10 ** 6)
            assert [g["second"] for g in got] == list(range(START, START + SECONDS)), f"bed {p}: each second once"
            np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], rtol=0, atol=1e-9)
            assert [g["alarm"] for g in got] == [w["alarm"] for w in want]
        # the same episodes (b closes nothing the stream did not: the reference closes at the end, b leaves the
        # still-open ones open until the beds go silent)
        ep = lambda e: (e["bed"], e["start"], e["last_on"], e["alarm_class"], e["peak_second"])  # noqa: E731
        got_eps = sorted(map(ep, store.episodes(limit=10 ** 6)))
        assert got_eps == sorted(map(ep, ref.store.episodes(limit=10 ** 6)))
        assert any(e["end"] is not None for e in ref.store.episodes()) or got_eps, "the stream alarms"
        out = r.xlen(f"{prefix}:out")
        assert out > 0, "results are published"
        store.dispose()
        print(f"killed after {killed_at} of {total} bed-seconds; {len(got_eps)} episodes; {out} results published")


class _Killed(Exception):
    pass


class _DiesBeforePublishing(Consumer):
    """A consumer that dies right after its commit, before it publishes: the one moment the outbox is for (a
    SIGKILL lands there too rarely for the chaos test above to hit it)."""

    def _send(self, pipe, out):
        raise _Killed(out.id)


def _out(r, prefix):
    return [(fields.get(b"batch"), json.loads(fields[b"m"])) for _, fields in r.xrange(f"{prefix}:out")]


def test_a_result_committed_but_never_published_is_published_once_by_another_consumer(alarming, redis_prefix):
    r, prefix = redis_prefix
    scorer, pid, values = alarming
    want = series_answer(scorer, pid, values)
    n = int(want.episodes[0].start.timestamp()) - START + 5  # the stream ends inside an alarm episode
    item = {"bed": pid, "start": START, "vitals": {s: [None if np.isnan(x) else float(x) for x in values[i, :n]]
                                                   for i, s in enumerate(scorer.spec.signals)}}
    with scratch_database("biostream_outbox") as url:
        stream = params(url, shards=SHARDS, silent_s=120)
        publish(r, prefix, [item], SHARDS)
        a = _DiesBeforePublishing(StreamEngine(scorer, Store(url), stream), r, prefix, "a", lease_ms=500)
        started = time.time()  # a commits after this
        with pytest.raises(_Killed):
            for _ in range(10):
                a.step()
        store = a.engine.store
        assert store.count_seconds() == n and not r.exists(f"{prefix}:out"), "committed, never published"
        b = Consumer(StreamEngine(scorer, Store(url), stream), r, prefix, "b", lease_ms=500)
        assert b.republish(now=started + 0.9) == 0, "a result committed < 2 leases ago is its consumer's to publish"
        assert b.republish(now=time.time() + 1.5) == 1
        assert b.republish(now=time.time() + 1.5) == 0, "published once"
        [(batch, message)] = _out(r, prefix)
        assert batch is not None and message["problems"] == []
        [bed] = message["beds"]
        stored = store.seconds(pid, limit=10 ** 6)
        assert [s["time"] for s in bed["seconds"]] == [datetime.fromtimestamp(s["second"], UTC).isoformat()
                                                       .replace("+00:00", "Z") for s in stored]
        np.testing.assert_allclose([s["score"] for s in bed["seconds"]], [s["score"] for s in stored], rtol=0)
        assert [e["start"] for e in bed["opened"]] == [
            datetime.fromtimestamp(e["start"], UTC).isoformat().replace("+00:00", "Z") for e in store.episodes(pid)]
        # a's shard, once its lease expired and a no longer counts as alive (2 leases): b scores its
        # unacknowledged entry again, finds it stored (repeats)
        time.sleep(1.1)
        shard = f"{prefix}:in:{shard_of(pid, SHARDS)}"
        for _ in range(20):
            b.step()
            if r.xpending(shard, "score")["pending"] == 0 and len(_out(r, prefix)) == 2:
                break
        assert store.count_seconds() == n, "nothing stored twice"
        assert _out(r, prefix)[1][1]["beds"][0]["repeated"] == n
        # the bed goes silent: the sweep closes its open episode and publishes it, through the outbox too
        assert store.episodes(pid, open_only=True), "the stream ended inside an episode"
        assert b.sweep(now=time.time() + 121) == 1
        batch, closed = _out(r, prefix)[-1]
        assert batch is not None and [x["bed"] for x in closed["beds"]] == [pid]
        assert [e["open"] for e in closed["beds"][0]["closed"]] == [False]
        assert not store.episodes(pid, open_only=True)
        assert b.published, "b's own results leave the outbox with its next commit..."
        b.forget_published()  # "... or when it has nothing to do (`run`)"
        assert b.republish(now=time.time() + 1.5) == 0, "nothing left in the outbox"
        for engine in (a.engine, b.engine):
            engine.store.dispose()

