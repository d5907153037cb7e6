"""Memory of the largest `/ingest` messages and of a gateway's replay after an outage, against the real service
(the `package` stage's bento, a scratch sqlite store), each worker's resident memory sampled throughout (issue #39).

    python -m benchmarks.bench_ingest_memory [--beds 2000] [--hours 1.0] [--out FILE]

Cases, test patients replayed as beds (float32, as a gateway sends them):
* the documented largest message an Arrow stream may be: `stream.max_message_bed_s` bed-seconds (4,000 beds x 60 s);
* a JSON message near `serve.max_body_mb`;
* the message issue #39 measured killing a worker: 50 beds x 3,600 s, Arrow (now over the bed-seconds: 413);
* what the issue's cap once allowed, 4,000 beds x 3,600 s, Arrow with zstd: refused (413) before it is decoded;
* a gateway replaying an outage of `--hours` for `--beds` beds in the documented chunking (messages of
  `max_message_bed_s` bed-seconds, every bed's seconds in order), then every stored second counted: nothing lost.
Beside each: status, seconds, and per worker the idle and peak RSS (the floor: the worker idle after one
message of one bed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks._data import BenchData
from benchmarks._memory import Watch, children
from benchmarks.bench_service import Connection, Server
from benchmarks.bench_streams import replay
from biostream.core.io import write_json
from biostream.core.runtime import configure
from biostream.serving.arrow import ARROW_STREAM

BIN = Path(sys.executable).parent


def arrow(values: np.ndarray, signals: list[str], names: list[str], start: int, compression: str | None = None
          ) -> bytes:
    """An Arrow IPC stream of `values` (beds, S, seconds) from second `start`: one row per bed and second."""
    import pyarrow as pa

    beds, _, n = values.shape
    cols = {"bed": pa.array(np.repeat(np.asarray(names, dtype=object), n)),
            "time": pa.array(np.tile(np.arange(start, start + n, dtype=np.float64), beds))}
    for j, s in enumerate(signals):
        cols[s] = pa.array(values[:, j, :].reshape(-1).astype(np.float32))
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=compression)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def send(port: int, body: bytes, auth: dict[str, str]) -> tuple[int, float, dict]:
    conn = Connection("127.0.0.1", port, timeout=600)
    kind = ARROW_STREAM if body[:4] == b"\xff\xff\xff\xff" else "application/json"
    began = time.perf_counter()
    conn.request("POST", "/ingest", body=body, headers={"Content-Type": kind, **auth})
    resp = conn.getresponse()
    raw = resp.read()
    took = time.perf_counter() - began
    conn.close()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"raw": raw[:200].decode(errors="replace")}
    return resp.status, took, answer


def case(server: Server, name: str, body: bytes, auth: dict[str, str], log) -> dict:
    with Watch(children(server.proc.pid)) as watch:
        status, took, answer = send(server.port, body, auth)
    out = {"status": status, "took_s": round(took, 2), "body_bytes": len(body), **watch.summary()}
    if status != 200:
        out["error"] = answer.get("error", str(answer)[:200])
    log.info("%s: %s", name, out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beds", type=int, default=2000, help="beds of the replay after an outage")
    p.add_argument("--hours", type=float, default=1.0, help="the outage replayed")
    p.add_argument("--out", default="results/bench_ingest_memory.json")
    args = p.parse_args(argv)
    log = configure()
    bento = json.loads(Path("results/bento.json").read_text())
    os.environ["BENTOML_HOME"] = str(Path(bento["bentoml_home"]).resolve())
    from biostream.serving.streaming.redis_path import load_scorer

    scorer = load_scorer(None, None)
    signals = list(scorer.spec.signals)
    stream = scorer.spec.stream
    cap = int(stream["max_message_bed_s"])
    data = BenchData.load()
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_memory_"))
    url = f"sqlite:///{tmp / 'streams.db'}"
    from biostream.serving.security.keys import KeyStore

    keys = KeyStore(url, create=True)
    auth = {"Authorization": f"Bearer {keys.create('gateway', 'bench_ingest_memory', expires_days=1)[1]}"}
    keys.dispose()
    results: dict[str, object] = {"max_message_bed_s": cap, "max_body_mb": scorer.spec.max_body_bytes >> 20,
                                  "worker_memory_mb": scorer.spec.worker_memory_mb, "cores": os.cpu_count()}
    now = int(time.time())
    with Server([str(BIN / "bentoml"), "serve", bento["bento"], "--host", "127.0.0.1", "--port", "{port}"],
                {**os.environ, "BIOSTREAM_STREAM_STORE": url}, "/readyz", tmp / "serve.log") as server:
        one = replay(data, signals, 1, 60)
        for _ in range(2 * scorer.spec.workers):  # every worker has read a message once: its idle size after it
            send(server.port, arrow(one, signals, ["warm"], now - 7200), auth)
        beds = cap // 60
        largest = replay(data, signals, beds, 60)
        results["arrow_largest_message"] = {"beds": beds, "bed_s": 60, **case(
            server, f"Arrow, {beds} beds x 60 s", arrow(largest, signals, [f"big-{i}" for i in range(beds)],
                                                         now - 600), auth, log)}
        del largest
        samples = [{"bed": f"json-{i}", "start": now - 900, "vitals": {
            s: [None if np.isnan(x) else round(float(x), 1) for x in v[j]] for j, s in enumerate(signals)}}
            for i, v in enumerate(replay(data, signals, 1000, 120))]
        json_beds = len(samples)
        body = json.dumps({"samples": samples}).encode()
        while len(body) > scorer.spec.max_body_bytes:
            json_beds = json_beds * 9 // 10
            body = json.dumps({"samples": samples[:json_beds]}).encode()
        results["json_near_body_limit"] = {"beds": json_beds, "bed_s": 120, **case(
            server, f"JSON, {json_beds} beds x 120 s", body, auth, log)}
        issue = replay(data, signals, 50, 3600)
        results["issue_50_beds_x_3600_s"] = {"beds": 50, "bed_s": 3600, **case(
            server, "Arrow, 50 beds x 3,600 s", arrow(issue, signals, [f"issue-{i}" for i in range(50)], now - 8000),
            auth, log)}
        del issue
        flat = np.full((4000, len(signals), 3600), 80.0, dtype=np.float32)
        results["documented_4000_beds_x_3600_s_zstd"] = {"beds": 4000, "bed_s": 3600, **case(
            server, "Arrow zstd, 4,000 beds x 3,600 s", arrow(flat, signals, [f"doc-{i}" for i in range(4000)],
                                                              now - 8000, "zstd"), auth, log)}
        del flat
        # a gateway's replay after an outage, in the documented chunking: max_message_bed_s bed-seconds a message
        seconds = int(args.hours * 3600)
        per = max(1, cap // args.beds)
        outage = replay(data, signals, args.beds, seconds)
        names = [f"ward-{i}" for i in range(args.beds)]
        first = now - seconds - 60
        statuses, times = [], []
        with Watch(children(server.proc.pid)) as watch:
            began = time.perf_counter()
            for a in range(0, seconds, per):
                status, took, answer = send(server.port, arrow(outage[:, :, a:a + per], signals, names, first + a),
                                            auth)
                statuses.append(status)
                times.append(took)
                if status != 200:
                    log.error("replay message at %d s: %s %s", a, status, str(answer)[:300])
            wall = time.perf_counter() - began
        from biostream.serving.streaming.store import Store

        store = Store(url)
        stored = {b: len(store.seconds(b, limit=10 ** 7)) for b in names[:: max(1, args.beds // 20)]}
        total = store.count_seconds()
        store.dispose()
        # every bed-second answered 200 is stored, once: the warm-up bed's 60, the cases taken, the replay's
        taken = 60 + sum(r["beds"] * r["bed_s"] for r in results.values() if isinstance(r, dict) and r.get(
            "status") == 200 and "bed_s" in r) + sum(args.beds * min(per, seconds - a) for a, st in zip(
                range(0, seconds, per), statuses, strict=True) if st == 200)
        results["replay_after_outage"] = {
            "beds": args.beds, "seconds": seconds, "messages": len(statuses),
            "bed_seconds_per_message": per * args.beds, "statuses": sorted(set(statuses)), "wall_s": round(wall, 1),
            "message_s_p50": round(float(np.median(times)), 2), "message_s_max": round(max(times), 2),
            "stored_seconds_sampled_beds": stored, "store_seconds_total": total, "bed_seconds_answered_200": taken,
            "lost": taken - total, **watch.summary()}
        log.info("replay of %d beds x %d s in %d messages: %s", args.beds, seconds, len(statuses),
                 results["replay_after_outage"])
    write_json(results, Path(args.out))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
