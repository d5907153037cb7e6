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

import numpy as np
import pytest

from biostream.serving.streaming.engine import Chunk, StreamEngine
from biostream.serving.streaming.redis_path import publish
from biostream.serving.streaming.store import Store, sqlite_url
from tests.conftest import ROOT
from tests.model.conftest import scorer_for
from tests.model.test_streams import START, params
from tests.pipeline.conftest import scratch_database

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
