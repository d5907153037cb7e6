"""Benchmark of bedside streams: test patients replayed as N beds at 1 Hz, each second's newest values only,
against the real service (`POST /ingest`, sqlite store) and the Redis path (consumers, PostgreSQL store).

    python -m benchmarks.bench_streams [--beds 2000] [--seconds 60] [--paths http,redis] [--out FILE]

Needs `dvc repro` first (the `package` stage's bento, the synthetic test patients). Each tick (one per second of
wall clock) the gateway sends every bed's newest second: over HTTP as `--connections` messages sent at once
(one per service worker: each carries its share of the beds), over Redis as one entry per shard. The gateway
makes (serializes) a tick's messages before it is due, once the previous tick is answered: its own work, on
another machine in a ward, does not compete with the service for these 2 cores. What is timed,
per bed-second, is from the moment its message leaves the gateway to the moment its score is readable: the HTTP
answer (sent after the store's commit), or the consumer's result on `<prefix>:out` (published after the commit).
A tick that starts late (the previous one took more than a second) is backlog: the benchmark reports how late
ticks started, first half against second half (growing lag = the path does not keep up). The first
`--warmup` ticks are not counted (beds created, histories filling).

Beside each figure, its floor on the same machine in the same run: the model's own time to score one tick's
windows in this process (nothing parsed, stored or sent), and the same path with one bed; and each service worker's
(or consumer's) resident memory, idle and at its peak during the run. Bytes per bed-second
on the wire: this message, JSON and Arrow, against today's re-send of the whole window to `POST /predict`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks._data import BenchData
from benchmarks._memory import Watch, children
from benchmarks.bench_service import Connection, Server
from biostream.core.io import write_json
from biostream.core.runtime import configure
from biostream.serving.arrow import ARROW_STREAM

BIN = Path(sys.executable).parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/0"
START = 1795000000


def replay(data: BenchData, signals: list[str], beds: int, seconds: int) -> np.ndarray:
    """(beds, S, seconds) values: bed i replays test patient i mod P from an offset of its own."""
    v = data.dataset.vitals
    test = v[v["split"] == "test"]
    recs = [g[signals].to_numpy(dtype=np.float64) for _, g in test.groupby("patient_id", sort=True)]
    out = np.empty((beds, len(signals), seconds))
    for i in range(beds):
        r = recs[i % len(recs)]
        a = (i * 37) % max(1, len(r) - seconds)
        out[i] = r[a:a + seconds].T
    return out


def items(values: np.ndarray, signals: list[str], names: list[str], t: int) -> list[dict]:
    col = values[:, :, t]
    return [{"bed": n, "start": START + t, "vitals": {s: [None if np.isnan(x) else float(x)]
                                                     for s, x in zip(signals, row, strict=True)}}
            for n, row in zip(names, col, strict=True)]


def arrow_body(values: np.ndarray, signals: list[str], names: list[str], t: int) -> bytes:
    import pyarrow as pa

    cols = {"bed": pa.array(names), "time": pa.array(np.full(len(names), START + t, dtype=np.float64))}
    for j, s in enumerate(signals):
        cols[s] = pa.array(values[:, j, t].astype(np.float32))
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def summary(lat_ms: list[float], lags: list[float]) -> dict[str, float]:
    half = len(lags) // 2
    return {"p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "max_ms": float(np.max(lat_ms)), "late_start_ms_first_half": float(np.mean(lags[:half]) * 1e3),
            "late_start_ms_second_half": float(np.mean(lags[half:]) * 1e3), "max_late_start_ms": max(lags) * 1e3}


def run_http(port: int, values: np.ndarray, signals: list[str], seconds: int, warmup: int, connections: int,
             tag: str, arrow: bool = False, workers: int = 2, auth: dict[str, str] | None = None) -> dict[str, float]:
    beds = values.shape[0]
    names = [f"{tag}-{i}" for i in range(beds)]
    shares = np.array_split(np.arange(beds), connections)
    auth = auth or {}
    conns = one_per_worker(port, len(shares), workers, auth=auth)
    lat: list[float] = []
    lags: list[float] = []
    t0 = time.monotonic() + 1.0
    for t in range(seconds):
        bodies = [arrow_body(values[idx], signals, [names[i] for i in idx], t) if arrow else
                  json.dumps({"samples": items(values[idx], signals, [names[i] for i in idx], t)}).encode()
                  for idx in shares]
        due = t0 + t
        time.sleep(max(0.0, due - time.monotonic()))
        sent = time.monotonic()
        took = [0.0] * len(shares)

        def send(k: int, sent: float = sent, bodies: list[bytes] = bodies, took: list[float] = took) -> None:
            conns[k].request("POST", "/ingest", body=bodies[k],
                             headers={"Content-Type": ARROW_STREAM if arrow else "application/json", **auth})
            resp = conns[k].getresponse()
            data = resp.read()
            if resp.status != 200:
                raise SystemExit(f"POST /ingest: {resp.status} {data[:300]!r}")
            took[k] = time.monotonic() - sent

        threads = [threading.Thread(target=send, args=(k,)) for k in range(len(shares))]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        if t >= warmup:
            lags.append(sent - due)
            for k, idx in enumerate(shares):
                lat += [took[k] * 1e3] * len(idx)
    return summary(lat, lags)


def worker_of(port: int) -> dict[int, str]:
    """The service process holding each client connection to `port`: {client port: pid} (from `ss`)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split()
        if "pid=" in line and len(parts) >= 4:
            found[int(parts[3].rsplit(":", 1)[1])] = line.split("pid=")[1].split(",")[0]
    return found


def one_per_worker(port: int, n: int, workers: int, tries: int = 40,
                   auth: dict[str, str] | None = None) -> list[Connection]:
    """n keep-alive connections, spread over the service's workers: the kernel hands each new connection to
    either worker, so two of a gateway's connections land on one worker about one time in two; a connection
    that shares its worker while another worker has none is opened again (what a gateway that keeps one
    connection per worker would hold)."""
    conns: list[Connection] = []
    for _ in range(tries):
        while len(conns) < n:
            c = Connection("127.0.0.1", port, timeout=60)
            c.request("POST", "/metadata", body=b"{}", headers={"Content-Type": "application/json", **(auth or {})})
            c.getresponse().read()
            conns.append(c)
        pids = worker_of(port)
        held = [pids.get(c.sock.getsockname()[1]) for c in conns]
        if len(set(held)) >= min(n, workers):
            return conns
        seen: set[str | None] = set()
        for k, pid in enumerate(held):
            if pid in seen:
                conns[k].close()
                conns[k] = None  # type: ignore[call-overload]
            seen.add(pid)
        conns = [c for c in conns if c is not None]
    raise SystemExit(f"could not spread {n} connections over the service's workers in {tries} tries")


def run_redis(prefix: str, values: np.ndarray, signals: list[str], seconds: int, warmup: int, shards: int,
              tag: str) -> dict[str, float]:
    import redis

    from biostream.serving.streaming.redis_path import messages, publish

    r = redis.Redis.from_url(REDIS)
    beds = values.shape[0]
    names = [f"{tag}-{i}" for i in range(beds)]
    sent_at: dict[int, float] = {}
    lat: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()
    got = [0]

    # read the results from the stream's newest entry as of now, not "$": a read with "$" sees only what comes
    # after the call, so a result published between two calls (the reader waiting on the GIL while the gateway
    # thread builds a tick's 2,000 items) was never counted
    newest = r.xrevrange(f"{prefix}:out", count=1)
    start_id = newest[0][0] if newest else "0-0"
    per_second: dict[int, int] = {}
    worst: dict[int, float] = {}  # tick -> its slowest bed-second (ms)
    batches: set[bytes | None] = set()

    def read() -> None:
        last = start_id
        reader = redis.Redis.from_url(REDIS)
        while not stop.is_set():
            reply = reader.xread({f"{prefix}:out": last}, block=200, count=100)
            now = time.monotonic()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"batch" in fields and fields[b"batch"] in batches:
                        continue  # published again (at least once): counted already
                    batches.add(fields.get(b"batch"))
                    for bed in json.loads(fields[b"m"])["beds"]:
                        for s in bed["seconds"]:
                            second = _second(s["time"])
                            with lock:
                                got[0] += 1
                                per_second[second] = per_second.get(second, 0) + 1
                                if second - START >= warmup and second in sent_at:
                                    lat.append((now - sent_at[second]) * 1e3)
                                    worst[second - START] = max(worst.get(second - START, 0.0), lat[-1])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    lags = []
    t0 = time.monotonic() + 1.0
    for t in range(seconds):
        batch = messages(items(values, signals, names, t), shards)  # serialized before it is due, as over HTTP
        due = t0 + t
        time.sleep(max(0.0, due - time.monotonic()))
        sent = time.monotonic()
        with lock:
            sent_at[START + t] = sent
        publish(r, prefix, batch, shards)
        if t >= warmup:
            lags.append(sent - due)
        while per_second.get(START + t, 0) < beds and time.monotonic() < due + 0.9:
            time.sleep(0.002)  # the next tick is made once this one is answered (as over HTTP), not meanwhile
    deadline = time.monotonic() + 60
    while got[0] < beds * seconds and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    reader.join()
    if got[0] < beds * seconds:  # what is left where, for whoever looks into it (the keys are deleted after this)
        left = {k: (r.xlen(f"{prefix}:in:{k}"), r.xpending(f"{prefix}:in:{k}", "score")["pending"]
                    if r.exists(f"{prefix}:in:{k}") else 0) for k in range(shards)}
        short = {t: per_second.get(START + t, 0) for t in range(seconds) if per_second.get(START + t, 0) != beds}
        raise SystemExit(f"the consumers published {got[0]} of {beds * seconds} bed-seconds within 60 s of the last; "
                         f"bed-seconds published for the ticks short of {beds}: {short}; entries left (in the "
                         f"stream, unacknowledged) per shard: {left}; leases: "
                         f"{ {k: r.get(f'{prefix}:lease:{k}') for k in range(shards)} }")
    slowest = sorted(worst.items(), key=lambda kv: -kv[1])[:3]
    return {**summary(lat, lags), "slowest_ticks": [[t, round(ms)] for t, ms in slowest]}


def _second(text: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def model_floor(scorer, values: np.ndarray) -> float:
    """ms for the champion alone to score one tick's windows (every bed's window ending now), in process, in
    the engine's batches; the best of 3."""
    from biostream.serving.streaming.stepping import SCORE_CHUNK

    w = scorer.spec.window_s
    x = np.repeat(values[:, :, :1], w, axis=2)
    scorer.bundle.outputs(x[:SCORE_CHUNK])
    took = []
    for _ in range(3):
        t = time.perf_counter()
        for a in range(0, len(x), SCORE_CHUNK):
            scorer.bundle.outputs(x[a:a + SCORE_CHUNK])
        took.append(time.perf_counter() - t)
    return min(took) * 1e3


def fill_day(url: str, day: int, beds: int, seconds: int) -> int:
    """A past day's partition holding `seconds` seconds of `beds` beds (made in the server: no client round trip);
    its rows."""
    import sqlalchemy as sa

    from biostream.serving.database.retention import partition_name

    name = partition_name(day)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF stream_seconds FOR VALUES FROM ({day}) TO "
                             f"({day + 86400})")
        n = conn.execute(sa.text(
            f"INSERT INTO {name} SELECT 'old-' || b, :day + s, :vals, 0.1, false, false, false, NULL, 0 "
            "FROM generate_series(0, :beds - 1) AS b, generate_series(0, :secs - 1) AS s"),
            {"day": day, "vals": np.full(8, 80.0).tobytes(), "beds": beds, "secs": seconds}).rowcount
    with engine.connect() as conn:  # written and vacuumed, as a day-old partition is: no autovacuum mid-run
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql(f"VACUUM ANALYZE {name}")
        conn.exec_driver_sql("CHECKPOINT")
    engine.dispose()
    return int(n)


def fill_past(url: str, beds: int, hours: float) -> dict[str, int]:
    """Two past days: the one the sweep drops (`hours` of every bed) and, the day before, a tenth of it (its floor)."""
    from biostream.serving.database.retention import DAY

    big_day = START // DAY * DAY - 10 * DAY
    return {"small_day": big_day - DAY, "small_rows": fill_day(url, big_day - DAY, beds, int(hours * 360)),
            "big_day": big_day, "big_rows": fill_day(url, big_day, beds, int(hours * 3600))}


def quiet(log, silent_s: int = 120) -> None:
    """Wait until the consumers have closed the previous run's 2,000 beds for silence (`stream.silent_s` after
    their last second, in one sweep): otherwise that close lands in the next run's ticks (a 2-3 s stall, seen in
    the run after the sweep's twice)."""
    log.info("waiting %d s: the previous run's beds closed for silence before the next run", silent_s + 20)
    time.sleep(silent_s + 20)


def sweep_run(url: str, prefix: str, values: np.ndarray, signals: list[str], args: argparse.Namespace, shards: int,
              log, filled: dict[str, int]) -> dict[str, object]:
    """The Redis path streaming while the retention job drops a past day's partition (PostgreSQL), between two runs
    of the same stream without it (`redis_json` before, `redis_json_after`); the drop of a partition a tenth the
    size, alone, as its floor."""
    from dataclasses import replace

    from biostream.serving.database.retention import DAY, DEFAULT_RETENTION
    from biostream.serving.database.retention import run as retain

    beds, big_day, big_rows, small_rows = args.beds, filled["big_day"], filled["big_rows"], filled["small_rows"]
    keep = replace(DEFAULT_RETENTION, seconds_days=7)
    t = time.perf_counter()
    alone = retain(url, keep, now=big_day + 7 * DAY)  # the cut-off at the big day: only the small one goes
    small_s = time.perf_counter() - t
    done: dict[str, object] = {}

    def sweep() -> None:
        t = time.perf_counter()
        done.update(retain(url, keep, now=big_day + 8 * DAY))
        done["seconds"] = time.perf_counter() - t

    quiet(log)
    timer = threading.Timer(1.5 + args.warmup + args.seconds / 2, sweep)  # mid-way through the counted ticks
    timer.start()
    out = run_redis(prefix, values, signals, args.seconds, args.warmup, shards, "sweep")
    timer.join()
    log.info("redis, %d beds, a %d-row day dropped mid-run: %s (sweep %s)", beds, big_rows, out, done)
    quiet(log)
    after = run_redis(prefix, values, signals, args.seconds, args.warmup, shards, "after")
    log.info("redis, %d beds, again without a sweep: %s", beds, after)
    return {"redis_json_sweep": out, "redis_json_after": after, "sweep": {
        "rows_dropped": big_rows, "dropped": done.get("partitions_dropped"), "sweep_s": done.get("seconds"),
        "floor_rows_dropped": small_rows, "floor_dropped": alone["partitions_dropped"], "floor_sweep_s": small_s}}


def board_open_run(port: int, values: np.ndarray, signals: list[str], args: argparse.Namespace, workers: int,
                   auth: dict[str, str], clinician: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
    """`run_http` (JSON) while a board reads as board.html does: GET /beds (first page, open alarms first) every
    second and one bed's page (its last 30 min of seconds and its episodes) every 2 s; the ingest's figures and
    the board's read times (ms)."""
    import http.client

    stop, reads, pages = threading.Event(), [], []

    def board() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        k = 0
        while not stop.is_set():
            t = time.monotonic()
            paths = ["/beds?size=50"] + ([f"/beds/board-{k % values.shape[0]}/scores?limit=1800",
                                          f"/beds/board-{k % values.shape[0]}/episodes"] if k % 2 == 0 else [])
            for path in paths:
                s = time.monotonic()
                conn.request("GET", path, headers=clinician)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    raise SystemExit(f"GET {path}: {resp.status}")
                (reads if path.startswith("/beds?") else pages).append((time.monotonic() - s) * 1e3)
            k += 1
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t)))

    thread = threading.Thread(target=board, daemon=True)
    thread.start()
    try:
        result = run_http(port, values, signals, args.seconds, args.warmup, args.connections, "board",
                          workers=workers, auth=auth)
    finally:
        stop.set()
        thread.join(30)
    q = np.percentile
    return result, {"get_beds_n": len(reads), "get_beds_p50_ms": float(q(reads, 50)),
                    "get_beds_p99_ms": float(q(reads, 99)), "bed_page_p50_ms": float(q(pages, 50)) if pages else None,
                    "bed_page_p99_ms": float(q(pages, 99)) if pages else None}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beds", type=int, default=2000)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--paths", default="http,redis")
    p.add_argument("--formats", default="json,arrow", help="HTTP: message formats, in this order")
    p.add_argument("--connections", type=int, default=2, help="HTTP: messages per tick (one per service worker)")
    p.add_argument("--consumers", type=int, default=2, help="Redis: consumer processes")
    p.add_argument("--no-auth-run", action=argparse.BooleanOptionalAction, default=True,
                   help="HTTP: also JSON through the same bento with no credential check (BIOSTREAM_AUTH=off), the "
                        "floor of the guard's cost")
    p.add_argument("--sweep-hours", type=float, default=1.0,
                   help="Redis/PostgreSQL: also stream while retention drops a past day's partition holding this many "
                        "hours of every bed (0: no sweep run); a tenth of it is dropped first, alone, as its floor")
    p.add_argument("--board", action=argparse.BooleanOptionalAction, default=False,
                   help="HTTP, JSON: a second run with the bed board open (GET /beds every second, a bed's page "
                        "every 2 s, as board.html polls), its reads timed beside the ingest's")
    p.add_argument("--out", default="results/bench_streams.json")
    args = p.parse_args(argv)
    log = configure()
    bento = json.loads(Path("results/bento.json").read_text())
    home = str(Path(bento["bentoml_home"]).resolve())
    os.environ["BENTOML_HOME"] = home
    from biostream.serving.streaming.redis_path import load_scorer

    scorer = load_scorer(None, None)  # the champion the bento serves
    meta_signals = list(scorer.spec.signals)
    data = BenchData.load()
    values = replay(data, meta_signals, args.beds, args.seconds)
    import gc

    gc.collect()
    gc.freeze()  # the gateway's own full collections (the cohort, the model) would pause its clocks
    results: dict[str, object] = {"beds": args.beds, "seconds": args.seconds, "warmup": args.warmup,
                                  "cores": os.cpu_count()}
    results["model_floor_ms_per_tick"] = model_floor(scorer, values)
    log.info("model alone: %.0f ms to score %d windows (one tick)", results["model_floor_ms_per_tick"], args.beds)
    one = json.dumps({"samples": items(values[:1], meta_signals, ["b"], 0)}).encode()
    full = json.dumps({"samples": items(values, meta_signals, [f"bed-{i}" for i in range(args.beds)], 0)}).encode()
    window = {"windows": [{"patient_id": "bed-1", "time": START, "vitals": {
        s: [None if np.isnan(x) else float(x) for x in np.repeat(values[0, j, :1], scorer.spec.window_s)]
        for j, s in enumerate(meta_signals)}}]}
    results["bytes_per_bed_second"] = {
        "ingest_json_one_bed": len(one), "ingest_json": len(full) / args.beds,
        "ingest_arrow": len(arrow_body(values, meta_signals, [f"bed-{i}" for i in range(args.beds)], 0)) / args.beds,
        f"predict_json_whole_window_{scorer.spec.window_s}s": len(json.dumps(window).encode())}
    tmp = Path(tempfile.mkdtemp(prefix="bench_streams_"))
    if "http" in args.paths:
        from biostream.serving.security.keys import KeyStore

        url = f"sqlite:///{tmp / 'streams.db'}"
        env = {**os.environ, "BIOSTREAM_STREAM_STORE": url}
        keys = KeyStore(url, create=True)  # a gateway's key, as every /ingest needs one (docs/security.md)
        auth = {"Authorization": f"Bearer {keys.create('gateway', 'bench_streams', expires_days=1)[1]}"}
        clinician = {"Authorization": f"Bearer {keys.create('clinician', 'bench_streams', expires_days=1)[1]}"}
        keys.dispose()
        with Server([str(BIN / "bentoml"), "serve", bento["bento"], "--host", "127.0.0.1", "--port", "{port}"],
                    env, "/readyz", tmp / "serve.log") as server:
            results["http_one_bed"] = run_http(server.port, values[:1], meta_signals, min(args.seconds, 30),
                                               args.warmup, 1, "one", auth=auth)
            log.info("http, 1 bed: %s", results["http_one_bed"])
            for form in args.formats.split(","):
                with Watch(children(server.proc.pid)) as watch:
                    results[f"http_{form}"] = run_http(server.port, values, meta_signals, args.seconds, args.warmup,
                                                       args.connections, form, arrow=form == "arrow",
                                                       workers=scorer.spec.workers, auth=auth)
                results[f"http_{form}"]["memory"] = watch.summary()
                log.info("http, %d beds, %s: %s", args.beds, form, results[f"http_{form}"])
            if args.board:
                results["http_json_board_open"], results["board_reads"] = board_open_run(
                    server.port, values, meta_signals, args, scorer.spec.workers, auth, clinician)
                results["http_json_after_board"] = run_http(  # the same again without the board: A-B-A
                    server.port, values, meta_signals, args.seconds, args.warmup, args.connections, "after",
                    workers=scorer.spec.workers, auth=auth)
                log.info("http, %d beds, json, the board open: %s; the board's reads: %s", args.beds,
                         results["http_json_board_open"], results["board_reads"])
        if args.no_auth_run:
            with Server([str(BIN / "bentoml"), "serve", bento["bento"], "--host", "127.0.0.1", "--port", "{port}"],
                        {**env, "BIOSTREAM_AUTH": "off"}, "/readyz", tmp / "serve_no_auth.log") as server:
                results["http_json_no_auth"] = run_http(server.port, values, meta_signals, args.seconds,
                                                        args.warmup, args.connections, "noauth",
                                                        workers=scorer.spec.workers)
                log.info("http, %d beds, json, no credential check: %s", args.beds, results["http_json_no_auth"])
    if "redis" in args.paths:
        import sqlalchemy as sa

        name = f"bench_streams_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        prefix = f"bench-{uuid.uuid4().hex[:6]}"
        shards = 16
        procs = []
        try:
            from biostream.serving.database.retention import DEFAULT_RETENTION
            from biostream.serving.database.retention import run as retain
            from biostream.serving.streaming.store import Store

            Store(f"{PG}/{name}").dispose()
            retain(f"{PG}/{name}", DEFAULT_RETENTION, now=START)  # the owner's job made today's partition ahead
            for k in range(args.consumers):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "biostream.serving.streaming.redis_path", "--redis", REDIS, "--store",
                     f"{PG}/{name}", "--prefix", prefix, "--name", f"c{k}"],
                    env={**os.environ, "BENTOML_HOME": home}, stdout=(tmp / f"c{k}.log").open("w"),
                    stderr=subprocess.STDOUT))
            time.sleep(20)  # model loaded, leases shared out
            results["redis_one_bed"] = run_redis(prefix, values[:1], meta_signals, min(args.seconds, 30),
                                                 args.warmup, shards, "one")
            log.info("redis, 1 bed: %s", results["redis_one_bed"])
            if args.sweep_hours > 0:  # the past days the sweep drops, there for every run (as in a ward's store)
                filled = fill_past(f"{PG}/{name}", args.beds, args.sweep_hours)
            with Watch([proc.pid for proc in procs]) as watch:
                results["redis_json"] = run_redis(prefix, values, meta_signals, args.seconds, args.warmup, shards,
                                                  "json")
            results["redis_json"]["memory"] = watch.summary()
            log.info("redis, %d beds: %s", args.beds, results["redis_json"])
            if args.sweep_hours > 0:
                results.update(sweep_run(f"{PG}/{name}", prefix, values, meta_signals, args, shards, log, filled))
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            import redis

            rr = redis.Redis.from_url(REDIS)
            keys = list(rr.scan_iter(f"{prefix}:*"))
            if keys:
                rr.delete(*keys)
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    write_json(results, args.out)
    print(json.dumps(results, indent=1))
    for path in ("http_json", "http_arrow", "redis_json"):
        if path in results and "memory" in results[path]:
            r, m = results[path], results[path]["memory"]
            print(f"{path} ({args.beds} beds): p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms; model alone "
                  f"{results['model_floor_ms_per_tick']:.0f} ms a tick; peak memory per worker: " + ", ".join(
                      f"{w['idle_mb']} -> {w['peak_mb']} MB" for w in m["workers"].values())
                  + ("" if m["workers_alive"] else " (a worker died)"))
    if "redis_json_sweep" in results:
        a, b, c, w = (results["redis_json_sweep"], results["redis_json"], results["redis_json_after"],
                      results["sweep"])
        print(f"retention sweep (same run, Redis/PostgreSQL, {args.beds} beds): p99 {a['p99_ms']:.0f} ms (max "
              f"{a['max_ms']:.0f}) with a {w['rows_dropped']}-row day dropped mid-run ({w['sweep_s']:.2f} s) vs "
              f"{b['p99_ms']:.0f} (max {b['max_ms']:.0f}) before and {c['p99_ms']:.0f} (max {c['max_ms']:.0f}) after "
              f"without ({a['p99_ms'] / b['p99_ms'] - 1:+.0%} against before, {a['p99_ms'] / c['p99_ms'] - 1:+.0%} "
              f"against after; slowest ticks (tick, ms) before {b['slowest_ticks']}, with the sweep (started at tick "
              f"{args.warmup + args.seconds // 2}) {a['slowest_ticks']}, after {c['slowest_ticks']}); a "
              f"{w['floor_rows_dropped']}-row day alone: {w['floor_sweep_s']:.2f} s")
    if "http_json_board_open" in results and "http_json" in results:
        a, b, r = results["http_json_board_open"], results["http_json"], results["board_reads"]
        c = results["http_json_after_board"]
        print(f"the board open (same run, same bento, {args.beds} beds, JSON): ingest p50 {a['p50_ms']:.0f} vs "
              f"{b['p50_ms']:.0f} before and {c['p50_ms']:.0f} ms after without it, p99 {a['p99_ms']:.0f} vs "
              f"{b['p99_ms']:.0f} and {c['p99_ms']:.0f} ms ({a['p99_ms'] / max(b['p99_ms'], c['p99_ms']) - 1:+.0%} "
              f"against the slower); ticks late by {a['late_start_ms_second_half']:.1f} ms (second half); "
              f"GET /beds p50 {r['get_beds_p50_ms']:.0f} ms, p99 "
              f"{r['get_beds_p99_ms']:.0f} ms ({r['get_beds_n']} reads); a bed's page p99 "
              f"{r['bed_page_p99_ms']:.0f} ms")
    if "http_json_no_auth" in results and "http_json" in results:
        a, b = results["http_json"], results["http_json_no_auth"]
        print(f"credential check and audit (same run, same bento, {args.beds} beds, JSON): p50 {a['p50_ms']:.0f} vs "
              f"{b['p50_ms']:.0f} ms, p99 {a['p99_ms']:.0f} vs {b['p99_ms']:.0f} ms; both sustain 1 Hz: "
              f"{a['late_start_ms_second_half'] < 100 and b['late_start_ms_second_half'] < 100}")


if __name__ == "__main__":
    main()
