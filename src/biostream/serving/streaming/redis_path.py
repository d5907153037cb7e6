"""The scale path of bedside streams: gateways publish on Redis streams, consumers on any number of processes or
machines score them and write to a shared store (PostgreSQL), which, not Redis, holds each bed's state.

Input: `stream.shards` Redis streams `<prefix>:in:<k>`, a bed always on the same one (`shard_of`: CRC32 of its id)
so that its seconds stay in order; each entry one JSON message as `POST /ingest` takes it, field `m` (`publish`).
Output: each batch's answer on `<prefix>:out` (fields `m` and `batch`), after the store's commit. How consumers
share the shards and why each second is stored once: `Consumer`; docs/streams.md.

Run a consumer: `python -m biostream.serving.streaming.redis_path --redis redis://... --store postgresql+psycopg://...`
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from biostream.serving.streaming.answers import BedAnswer, Outgoing, Problem, Problems
from biostream.serving.streaming.engine import StreamEngine
from biostream.serving.streaming.messages import MessageError, parse_json

GROUP = "score"
_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0"""
_RELEASE = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0"""


def shard_of(bed: str, shards: int) -> int:
    return zlib.crc32(bed.encode()) % shards


def messages(items: Sequence[Mapping[str, Any]], shards: int) -> dict[int, str]:
    """A gateway's items (as `POST /ingest` takes them) as one message per shard they fall in."""
    by_shard: dict[int, list[Mapping[str, Any]]] = {}
    for item in items:
        by_shard.setdefault(shard_of(str(item["bed"]), shards), []).append(item)
    return {k: json.dumps({"samples": part}) for k, part in sorted(by_shard.items())}


def publish(redis: Any, prefix: str, items: Sequence[Mapping[str, Any]] | Mapping[int, str],
            shards: int) -> list[bytes]:
    """Publish a gateway's items, one entry per shard they fall in (or the `messages` made of them already)."""
    by_shard = items if isinstance(items, Mapping) else messages(items, shards)
    pipe = redis.pipeline(transaction=False)
    for k, message in by_shard.items():
        pipe.xadd(f"{prefix}:in:{k}", {"m": message})
    return pipe.execute()


class Consumer:
    """Scores the shards whose leases it holds, so one consumer at a time scores a bed.

    * Ownership: a shard's lease is `<prefix>:lease:<k>` (SET NX with an expiry it renews). Consumers say they are
      alive in `<prefix>:consumers`; each holds at most its share of the shards and hands back what is over it when
      another starts (`hold_leases`). One that dies stops renewing; another takes the lease once it expires, claims
      the dead one's unacknowledged entries (consumer group `score`, XAUTOCLAIM) and reads on.
    * Exactly once: an entry is acknowledged only after the store committed what it scored
      (`biostream.serving.streaming.store`); one that comes again after a crash between the two finds its seconds
      stored and is a no-op. Redis keeps nothing on disk here: a new consumer resumes every bed from the store.
    * Results at least once: a batch's result message is written in the batch's own commit (the store's outbox) and
      deleted once published (by the next commit, or at once when there is nothing to do: `forget_published`); one
      that a dead consumer left there is published by a live one once it is `2 x lease` old (`republish`), with the
      same `batch` (a reader that must not see one twice keys on it).
    """

    def __init__(self, engine: StreamEngine, redis: Any, prefix: str, name: str | None = None,
                 lease_ms: int = 5000, batch: int = 64, block_ms: int = 50) -> None:
        self.engine, self.redis, self.prefix = engine, redis, prefix
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.shards = engine.params.shards
        self.lease_ms, self.batch, self.block_ms = lease_ms, batch, block_ms
        self.owned: set[int] = set()
        self.pending: set[int] = set()  # shards just taken: their unacknowledged entries come first
        self.renewed = 0.0
        self._renew = redis.register_script(_RENEW)
        self._unlease = redis.register_script(_RELEASE)
        self.stopping = False
        self.published: list[int] = []  # outbox ids published, deleted from the outbox by the next commit

    def key(self, shard: int) -> str:
        return f"{self.prefix}:in:{shard}"

    def lease(self, shard: int) -> str:
        return f"{self.prefix}:lease:{shard}"

    # ------------------------------------------------------------------------------------ leases
    def hold_leases(self) -> None:
        """Say this consumer is alive, renew the leases held (dropping any lost), hand back those over its fair
        share (the shards over the consumers alive, rounded up: a consumer that started first does not keep
        every shard), and take free ones up to that share."""
        now_ms = int(time.time() * 1000)
        live = f"{self.prefix}:consumers"
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(live, {self.name: now_ms})
        pipe.zremrangebyscore(live, 0, now_ms - 2 * self.lease_ms)  # consumers that stopped saying so
        pipe.zcard(live)
        alive = max(1, pipe.execute()[-1])
        share = -(-self.shards // alive)
        for k in sorted(self.owned):
            if not self._renew(keys=[self.lease(k)], args=[self.name, self.lease_ms]):
                self.owned.discard(k)
                self.pending.discard(k)
        for k in sorted(self.owned)[share:]:  # nothing of it is in flight: every batch is acknowledged
            self._release(k)
        for k in range(self.shards):
            if len(self.owned) >= share:
                break
            if k not in self.owned and self.redis.set(self.lease(k), self.name, nx=True, px=self.lease_ms):
                self._take(k)
        self.renewed = time.monotonic()

    def _release(self, shard: int) -> None:
        self._unlease(keys=[self.lease(shard)], args=[self.name])  # only if still ours
        self.owned.discard(shard)
        self.pending.discard(shard)

    def _take(self, shard: int) -> None:
        """A shard just leased: its group exists, and what earlier owners left unacknowledged is now ours."""
        from redis.exceptions import ResponseError

        try:
            self.redis.xgroup_create(self.key(shard), GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise
        start: Any = "0-0"
        while True:
            start = self.redis.xautoclaim(self.key(shard), GROUP, self.name, 0, start_id=start, count=1000)[0]
            if start in (b"0-0", "0-0"):
                break
        self.owned.add(shard)
        self.pending.add(shard)

    # ------------------------------------------------------------------------------------ work
    def step(self) -> int:
        """One round: leases; then the pending entries of a shard just taken (ours, or claimed from a dead
        owner), else the new entries of every owned shard (one blocking read), each shard's scored as one batch.
        Returns the entries processed."""
        if time.monotonic() - self.renewed > self.lease_ms / 3000:
            self.hold_leases()
        if not self.owned:
            return 0
        if self.pending:
            k = min(self.pending)
            entries = self._entries(self.redis.xreadgroup(GROUP, self.name, {self.key(k): "0"}, count=self.batch))
            if not entries.get(k):
                self.pending.discard(k)
                return 0
            return self._process({k: entries[k]})
        streams = {self.key(k): ">" for k in sorted(self.owned)}
        entries = self._entries(self.redis.xreadgroup(GROUP, self.name, streams, count=self.batch,
                                                      block=self.block_ms))
        if entries:  # a blocked read wakes on the first entry; the gateway's others (its other shards) follow
            # microseconds later: take what has arrived by now into the same batch, one model call and commit
            for k, more in self._entries(self.redis.xreadgroup(GROUP, self.name, streams, count=self.batch)).items():
                entries.setdefault(k, []).extend(more)
        return self._process(entries)

    def _entries(self, reply: Any) -> dict[int, list[tuple[bytes, dict]]]:
        out: dict[int, list[tuple[bytes, dict]]] = {}
        for key, entries in reply or []:
            k = int((key.decode() if isinstance(key, bytes) else key).rsplit(":", 1)[1])
            got = [(i, f) for i, f in entries if f]
            if got:
                out[k] = got
        return out

    def _process(self, entries: Mapping[int, Iterable[tuple[bytes, dict]]]) -> int:
        """Score the entries read from every shard as one batch (one model call per SCORE_CHUNK windows, one
        store transaction), then acknowledge them all and publish what was answered."""
        if not entries:
            return 0
        spec, params = self.engine.scorer.spec, self.engine.params
        chunks, problems, ids, refusing = [], [], {}, Problems()
        for shard, part in sorted(entries.items()):
            for entry_id, fields in part:
                ids.setdefault(shard, []).append(entry_id)
                try:
                    c, p = parse_json(fields[b"m"], spec, params)
                except (MessageError, KeyError) as error:
                    problems.append({"entry": entry_id.decode(), "error": f"entry {entry_id.decode()}: {error}"})
                    continue
                chunks += c
                problems += [dict(x.to_dict(), entry=entry_id.decode()) for x in p]
                refusing.extend(p)
        out = _outgoing(problems, self.published)
        if chunks:  # the message is kept in the commit, the published ones deleted
            self.engine.ingest(chunks, outgoing=out, problems=refusing)
            self.published = []
        else:
            out.message = out.render([], [])  # nothing stored: the entries come again if this dies before the ack
            if refusing.refused_beds:  # a bed whose data was refused is not a calm bed
                self.engine.ingest([], problems=refusing)
        pipe = self.redis.pipeline(transaction=True)
        for shard, done in ids.items():
            pipe.xack(self.key(shard), GROUP, *done)
            pipe.xdel(self.key(shard), *done)  # scored and stored: the stream keeps only what is still to do
        self._send(pipe, out)
        return sum(len(done) for done in ids.values())

    def sweep(self, now: float | None = None) -> int:
        """Close the silent beds (`StreamEngine.sweep`) and publish the episodes closed; returns how many."""
        out = _outgoing([], [])
        closed = self.engine.sweep(now, outgoing=out)
        if closed:
            self._send(self.redis.pipeline(transaction=True), out)
        return len(closed)

    def _send(self, pipe: Any, out: Outgoing) -> None:
        """Publish a batch's result (and what else `pipe` holds); the next commit deletes it from the outbox."""
        self._publish(pipe, [(out.id, out.message)])
        pipe.execute()
        if out.id is not None:
            self.published.append(out.id)

    def forget_published(self) -> None:
        """Delete the published results from the outbox now (nothing to commit with: idle, or stopping)."""
        if self.published:
            self.engine.store.published(self.published)
            self.published = []

    def _publish(self, pipe: Any, messages: Iterable[tuple[int | None, str]]) -> None:
        for batch, message in messages:
            fields = {"m": message} if batch is None else {"m": message, "batch": batch}
            pipe.xadd(f"{self.prefix}:out", fields, maxlen=100_000, approximate=True)

    def republish(self, now: float | None = None) -> int:
        """Publish the results of batches committed `2 x lease` ago or more and never published (their consumer
        died between its commit and its publish); returns how many."""
        now = time.time() if now is None else now
        with self.engine.store.unpublished(now - 2 * self.lease_ms / 1000) as rows:
            if rows:
                pipe = self.redis.pipeline(transaction=True)
                self._publish(pipe, rows)
                pipe.execute()
        return len(rows)

    def run(self, idle_exit_s: float | None = None, sweep_every_s: float = 5.0) -> None:
        """Score until stopped (SIGTERM/SIGINT), or, with `idle_exit_s`, until nothing came for that long."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        idle_since, swept = time.monotonic(), time.monotonic()
        while not self.stopping:
            if self.step():
                idle_since = time.monotonic()
            else:
                self.forget_published()
                if not self.owned:
                    time.sleep(self.lease_ms / 5000)
            if time.monotonic() - swept > sweep_every_s or self.engine.more_silent:  # the next step, between batches
                self.sweep()
                self.engine.store.checkpoint()
                self.republish()
                swept = time.monotonic()
            if idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s:
                break
        self.forget_published()
        for k in sorted(self.owned):  # hand the shards over at once
            self._release(k)
        self.redis.zrem(f"{self.prefix}:consumers", self.name)

    def _stop(self, *_: Any) -> None:
        self.stopping = True


def _outgoing(problems: list[dict[str, Any]], published: list[int]) -> Outgoing:
    """A batch's result message: the answers as `POST /ingest` gives them, with the message's `problems`; its
    commit deletes the `published` ones from the outbox."""

    def render(answers: list[BedAnswer], late: list[Problem]) -> str:
        return json.dumps({"beds": [a.to_dict() for a in answers], "problems": problems + [x.to_dict() for x in late]})

    return Outgoing(render, published=list(published))


def main(argv: list[str] | None = None) -> None:
    from biostream.core.runtime import configure

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--redis", help="Redis URL (default: stream.redis_url of the model's spec, or "
                                   "BIOSTREAM_REDIS_URL)")
    p.add_argument("--store", help="the stream store's URL (default: stream.store, or BIOSTREAM_STREAM_STORE)")
    p.add_argument("--prefix", default="biostream", help="Redis key prefix")
    p.add_argument("--name", help="this consumer's name in the group (default: host-pid)")
    p.add_argument("--bundle", help="a saved ModelBundle folder (default: the champion in BentoML's model store)")
    p.add_argument("--spec", help="its serving spec (JSON), with --bundle")
    p.add_argument("--lease-ms", type=int, default=5000)
    p.add_argument("--idle-exit-s", type=float, help="stop after this long without entries (tests, batch replays)")
    args = p.parse_args(argv)
    log = configure()
    import redis as redis_lib

    from biostream.serving.streaming.params import StreamParams
    from biostream.serving.streaming.store import Store

    scorer = load_scorer(args.bundle, args.spec)
    import gc

    gc.collect()
    gc.freeze()  # as the service: the model's objects are not walked by every full collection
    params = StreamParams.from_dict(scorer.spec.stream).with_environment()
    url = args.redis or params.redis_url
    if not url:
        raise SystemExit("no Redis: pass --redis, set stream.redis_url (params.yaml) or BIOSTREAM_REDIS_URL")
    store = Store(args.store or params.store)
    consumer = Consumer(StreamEngine(scorer, store, params), redis_lib.Redis.from_url(url), args.prefix, args.name,
                        lease_ms=args.lease_ms)
    log.info("consumer %s: %d shards of %s:in:*, store %s", consumer.name, params.shards, args.prefix,
             store.engine.url.render_as_string(hide_password=True))
    consumer.run(idle_exit_s=args.idle_exit_s)


def load_scorer(bundle: str | None, spec: str | None) -> Any:
    """The scorer of a saved bundle and spec, or of the champion the `package` stage put in BentoML's store."""
    from pathlib import Path

    from threadpoolctl import threadpool_limits

    from biostream.models.bundle import ModelBundle
    from biostream.serving.scorer import Scorer
    from biostream.serving.spec import BENTO_MODEL, MLFLOW_MODEL_DIR, ServingSpec, bundle_dir

    threadpool_limits(1)  # as the service: one BLAS/OpenMP thread per process
    if bundle:
        loaded, serving = ModelBundle.load(bundle), ServingSpec.from_dict(json.loads(Path(spec).read_text()))
    else:
        import bentoml

        model = bentoml.models.get(f"{BENTO_MODEL}:latest")
        loaded = ModelBundle.load(bundle_dir(model.path_of(MLFLOW_MODEL_DIR)))
        serving = ServingSpec.of_model(model.info.metadata)
    loaded.detector.prepare_for_serving()  # as the service: e.g. the LSTM's ONNX Runtime session
    return Scorer(loaded, serving)


if __name__ == "__main__":
    main()
