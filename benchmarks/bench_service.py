"""Benchmark of the BentoML service of the champion, over HTTP on loopback, against `mlflow models serve` and
a plain BentoML wrapper of the same registered model.

    python -m benchmarks.bench_service [--requests 2000] [--seconds 10] [--out results/bench_service.json]

Needs `dvc repro` first (the `package` stage's bento, the evaluate stage's test scores). For each server:
single-window requests with one keep-alive client (p50, p99, mean latency, features included), and
throughput with batches of 64 windows (one client, and 4 concurrent clients so that adaptive batching can
merge them), then single windows again right after that burst. This service is measured four ways: signals
as JSON numbers, packed (`vitals_f32`), and the batch as an Arrow IPC stream, plain and lz4-compressed. Every
server runs `serve.workers` worker processes. Windows are real test-patient windows; requests are serialised
before timing starts, each server first answers 500 requests (steady state), and the client turns Nagle's
algorithm off, as HTTP client libraries do. The payload floor (`benchmarks.floor_service`) receives the same
bodies and only parses them (Arrow: only reads them into a table): the most any BentoML endpoint could serve
of these windows on this machine. Prints a table and the ratios; targets: p99 <= 5 ms single-window,
>= 10,000 windows/s batched. The cost of the credential check and audit entry (docs/security.md): in process
(the guard in front of an endpoint that does nothing), and over HTTP, the same bento with and without it
(`BIOSTREAM_AUTH=off`) both up and measured in turns.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from biostream.core.config import load_yaml
from biostream.core.io import write_json
from biostream.core.params import validate
from biostream.core.runtime import configure, free_port
from biostream.data.dataset import read_dataset
from biostream.features import windows_at
from biostream.features.table import FeatureSet
from biostream.serving import pack_f32
from biostream.serving.arrow import ARROW_STREAM, windows_to_arrow

BIN = Path(sys.executable).parent
PACKED = "biostream, signals as vitals_f32"
ARROW = "biostream, Arrow IPC stream"
ARROW_LZ4 = "biostream, Arrow IPC stream, lz4"
FLOOR = "payload floor (parse only)"  # benchmarks.floor_service: the same bodies, no checks, no model
FLOOR_F32 = "payload floor (parse only), vitals_f32"
FLOOR_ARROW = "payload floor (read only), Arrow"
FLOOR_ARROW_LZ4 = "payload floor (read only), Arrow lz4"
WARMUP = 500  # requests before timing starts
NO_AUTH = "biostream, no credential check (BIOSTREAM_AUTH=off)"  # the same service without its guard
AUTH: dict[str, str] = {}  # the integrator key every request to this service carries (set by main)



class Server:
    """A server process on a free port, stopped on exit."""

    def __init__(self, cmd: list[str], env: dict[str, str], ready: str, log: Path) -> None:
        self.port = free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.env, self.ready, self.log = env, ready, log

    def __enter__(self) -> Server:
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{' '.join(self.cmd)} exited ({self.proc.returncode}); see {self.log}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", self.ready)
                if c.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{' '.join(self.cmd)} not ready after 240 s; see {self.log}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.out.close()


class Connection(http.client.HTTPConnection):
    """A keep-alive connection with Nagle's algorithm off, as gateways' HTTP clients (urllib3, httpx, Go's
    net/http) set it: otherwise a body's last partial segment can wait ~40 ms for a delayed ACK."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    """POST a JSON body, or an Arrow IPC stream (what starts with Arrow's continuation marker)."""
    kind = ARROW_STREAM if body[:4] == b"\xff\xff\xff\xff" else "application/json"
    conn.request("POST", path, body=body, headers={"Content-Type": kind, **AUTH})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise SystemExit(f"POST {path}: {resp.status} {data[:500]!r}")
    return data


def latency(port: int, path: str, bodies: list[bytes], n: int, warmup: int = WARMUP) -> dict[str, float]:
    conn = Connection("127.0.0.1", port, timeout=60)
    for i in range(warmup):  # steady state: compiled paths, warm caches
        post(conn, path, bodies[i % len(bodies)])
    times = []
    for i in range(n):
        t = time.perf_counter()
        post(conn, path, bodies[i % len(bodies)])
        times.append((time.perf_counter() - t) * 1e3)
    return {"p50_ms": statistics.median(times), "p99_ms": float(np.percentile(times, 99)),
            "mean_ms": statistics.fmean(times)}


def throughput(port: int, path: str, bodies: list[bytes], per_body: int, seconds: float, clients: int) -> float:
    counts = [0] * clients

    def run(i: int) -> None:
        conn = Connection("127.0.0.1", port, timeout=60)
        post(conn, path, bodies[i % len(bodies)])  # warm
        end, k = time.monotonic() + seconds, i
        while time.monotonic() < end:
            post(conn, path, bodies[k % len(bodies)])
            counts[i] += per_body
            k += clients

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def guard_cost_us(store_url: str, token: str, n: int = 20000) -> tuple[float, float]:
    """The credential check and audit entry in process, without HTTP: microseconds per request through the guard
    (`biostream.serving.security.guard.Guard`, a real key store) in front of an endpoint that does nothing, and
    through that endpoint alone. The guard's own cost, free of the 1.5-3x noise between two server runs."""
    import asyncio

    from biostream.serving.security.guard import Guard

    async def endpoint(scope, receive, send):  # noqa: ANN001
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive():  # noqa: ANN202
        return {"type": "http.request", "body": b""}

    async def send(message):  # noqa: ANN001, ANN202
        return None

    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"", "client": ("127.0.0.1", 1),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {token}".encode())]}
    guard = Guard(endpoint, store_url=store_url)

    async def run(app) -> float:  # noqa: ANN001
        t = time.perf_counter()
        for _ in range(n):
            await app(scope, receive, send)
        return (time.perf_counter() - t) / n * 1e6

    async def both() -> tuple[float, float]:
        await run(guard)  # warm: the key's row read, the audit thread started
        return min([await run(guard) for _ in range(3)]), min([await run(endpoint) for _ in range(3)])

    out = asyncio.run(both())
    guard.close()
    return out


def _nulls(a: np.ndarray) -> list:
    return [[None if math.isnan(v) else v for v in row] for row in a.tolist()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--requests", type=int, default=2000, help="single-window requests per server")
    p.add_argument("--seconds", type=float, default=10.0, help="per throughput measurement")
    p.add_argument("--out", default=None, help="also write the figures to this JSON file")
    p.add_argument("--target", default=None,
                   help="what `bentoml serve` runs for this service: the built bento (default, results/bento.json) "
                        "or biostream.serving.service:VitalsService (the working tree, same model store)")
    p.add_argument("--only-ours", action="store_true", help="measure this service only (no comparison servers)")
    args = p.parse_args(argv)
    log = configure()
    params = load_yaml(args.params)
    serve = validate(params).serve
    bento_path = Path("results/bento.json")
    if not bento_path.is_file():
        raise SystemExit("results/bento.json is missing: run `dvc repro` (the package stage) first")
    bento = json.loads(bento_path.read_text())
    detector, window_s = bento["detector"], int(bento["window_s"])
    full_s = int(params["featurize"]["window_s"])

    scores = pd.read_parquet(f"results/scores/{detector}.parquet")
    vitals = read_dataset("data/synthetic").vitals
    rows = scores[scores.groupby("patient_id").cumcount() >= full_s].sample(640, random_state=0)
    signals = list(FeatureSet.open("data/features", {}).pipeline.signals)
    full = windows_at(vitals, signals, full_s, rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    ours = [{"patient_id": str(pid), "time": int(t), "vitals": dict(zip(signals, _nulls(w[:, -window_s:]),
                                                                        strict=True))}
            for w, pid, t in zip(full, rows["patient_id"], rows["time_s"], strict=True)]
    packed = [{**{k: v for k, v in w.items() if k != "vitals"},
               "vitals_f32": dict(zip(signals, (pack_f32(r) for r in x[:, -window_s:]), strict=True))}
              for w, x in zip(ours, full, strict=True)]  # the same windows, signals as base64 float32
    pids, times = [str(p) for p in rows["patient_id"]], rows["time_s"].astype(float).tolist()

    def arrow(a: int, b: int, compression: str | None = None) -> bytes:
        return windows_to_arrow(pids[a:b], times[a:b], {s: full[a:b, j, -window_s:] for j, s in enumerate(signals)},
                                compression)

    single = {"ours": [json.dumps({"windows": [w]}).encode() for w in ours[:500]],
              "arrow": [arrow(i, i + 1) for i in range(500)],
              "arrow_lz4": [arrow(i, i + 1, "lz4") for i in range(500)],
              "ours_f32": [json.dumps({"windows": [w]}).encode() for w in packed[:500]],
              # the pyfunc's tensor input: NaN for missing (JSON's NaN token, which both servers parse)
              "tensor": [json.dumps({"inputs": full[i : i + 1].tolist()}).encode() for i in range(200)],
              "plain": [json.dumps({"windows": full[i : i + 1].tolist()}).encode() for i in range(200)]}
    batch = {"ours": [json.dumps({"windows": ours[i : i + 64]}).encode() for i in range(0, 640, 64)],
             "arrow": [arrow(i, i + 64) for i in range(0, 640, 64)],
             "arrow_lz4": [arrow(i, i + 64, "lz4") for i in range(0, 640, 64)],
             "ours_f32": [json.dumps({"windows": packed[i : i + 64]}).encode() for i in range(0, 640, 64)],
             "tensor": [json.dumps({"inputs": full[i : i + 64].tolist()}).encode() for i in range(0, 640, 64)],
             "plain": [json.dumps({"windows": full[i : i + 64].tolist()}).encode() for i in range(0, 640, 64)]}
    log.info("payloads: one window %.1f kB (ours, %d s; %.1f kB as vitals_f32) / %.1f kB (tensor, %d s); a batch "
             "of 64 %.0f kB (%.0f kB; Arrow %.0f kB, lz4 %.0f kB) / %.0f kB", len(single["ours"][0]) / 1e3, window_s,
             len(single["ours_f32"][0]) / 1e3, len(single["tensor"][0]) / 1e3, full_s, len(batch["ours"][0]) / 1e3,
             len(batch["ours_f32"][0]) / 1e3, len(batch["arrow"][0]) / 1e3, len(batch["arrow_lz4"][0]) / 1e3,
             len(batch["tensor"][0]) / 1e3)

    # the venv's commands first: `mlflow models serve` with several workers runs `uvicorn` from PATH
    env = dict(os.environ, BENTOML_HOME=str(Path(serve.bentoml_home).resolve()),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    tracking = params["tracking"]["uri"]
    model_uri = f"models:/{bento['registered_model']}@champion"
    servers = {
        "biostream (BentoML, this service)": (
            [str(BIN / "bentoml"), "serve", args.target or bento["bento"], "--host", "127.0.0.1", "--port", "{port}"],
            "/readyz", "/predict", "ours"),
        "mlflow models serve": (
            [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "--host",
             "127.0.0.1", "--port", "{port}", "--workers", str(serve.workers)], "/ping", "/invocations", "tensor"),
        "plain BentoML wrapper (pyfunc predict)": (
            [str(BIN / "bentoml"), "serve", "benchmarks.plain_service:PlainService", "--host", "127.0.0.1",
             "--port", "{port}"], "/readyz", "/predict", "plain"),
        FLOOR: (
            [str(BIN / "bentoml"), "serve", "benchmarks.floor_service:PayloadFloor", "--host", "127.0.0.1",
             "--port", "{port}"], "/readyz", "/predict", "floor"),
    }
    # this service asks every request for a key (docs/security.md): an integrator's, in a key store of its own
    from biostream.serving.security.keys import KeyStore

    logs = Path("results/bench_service")
    logs.mkdir(parents=True, exist_ok=True)
    store_url = f"sqlite:///{(logs / 'streams.db').resolve()}"
    env["BIOSTREAM_STREAM_STORE"] = store_url
    keys = KeyStore(store_url, create=True)
    token = keys.create("integrator", "bench_service", expires_days=1)[1]
    AUTH["Authorization"] = f"Bearer {token}"
    keys.dispose()
    guarded_us, bare_us = guard_cost_us(store_url, token)
    log.info("in process: %.1f us a request through the guard, %.1f us through the endpoint alone", guarded_us,
             bare_us)
    env["MLFLOW_TRACKING_URI"] = tracking
    results: dict[str, dict[str, float]] = {}
    if args.only_ours:
        servers = {k: v for k, v in servers.items() if v[3] in ("ours", "floor")}
    for name, (cmd, ready, path, kind) in servers.items():
        log.info("%s: starting", name)
        with Server(cmd, env, ready, logs / f"{kind}.log") as srv:
            if kind == "ours":  # BentoML's own floor: an endpoint that does no model work
                floor = latency(srv.port, "/metadata", [b"{}"], args.requests)
                log.info("POST /metadata (no model work): %s", {k: round(v, 2) for k, v in floor.items()})
            # this service takes each window's signals as JSON numbers and, packed, as base64 float32; the floor
            # parses exactly the same bodies
            bodies = {"ours": ((name, "ours"), (PACKED, "ours_f32"), (ARROW, "arrow"), (ARROW_LZ4, "arrow_lz4")),
                      "floor": ((FLOOR, "ours"), (FLOOR_F32, "ours_f32"), (FLOOR_ARROW, "arrow"),
                                (FLOOR_ARROW_LZ4, "arrow_lz4"))}
            for label, body in bodies.get(kind, ((name, kind),)):
                r = latency(srv.port, path, single[body], args.requests)
                r["batch64_windows_per_s"] = throughput(srv.port, path, batch[body], 64, args.seconds, 1)
                r["batch64_4clients_windows_per_s"] = throughput(srv.port, path, batch[body], 64, args.seconds, 4)
                # single windows again, right after the batched burst (an adaptive batcher that learned to
                # wait for company during the burst shows it here)
                after = latency(srv.port, path, single[body], args.requests, warmup=0)
                r["after_burst_p50_ms"], r["after_burst_p99_ms"] = after["p50_ms"], after["p99_ms"]
                results[label] = r
                log.info("%s: %s", label, {k: round(v, 2) for k, v in r.items()})

    # the guard's cost over HTTP: the same bento with and without it, both running, measured in turns (A B A B A B),
    # so that the machine's drift between two runs falls on both alike
    ours_cmd = servers["biostream (BentoML, this service)"][0]
    log.info("%s: starting beside this service", NO_AUTH)
    with Server(ours_cmd, env, "/readyz", logs / "ours_ab.log") as guarded, \
            Server(ours_cmd, {**env, "BIOSTREAM_AUTH": "off"}, "/readyz", logs / "ours_noauth.log") as bare:
        turns: dict[str, list[dict[str, float]]] = {"guarded": [], "bare": []}
        for _ in range(3):
            turns["guarded"].append(latency(guarded.port, "/predict", single["ours"], args.requests))
            turns["bare"].append(latency(bare.port, "/predict", single["ours"], args.requests))
    ab = {who: {k: statistics.median(r[k] for r in rs) for k in ("p50_ms", "p99_ms", "mean_ms")}
          for who, rs in turns.items()}
    log.info("in turns, median of 3: with the guard %s, without %s", ab["guarded"], ab["bare"])

    ours_r = results["biostream (BentoML, this service)"]
    results["BentoML floor: POST /metadata (no model work)"] = {**floor, "batch64_windows_per_s": float("nan"),
                                                                "batch64_4clients_windows_per_s": float("nan")}
    print(f"\nchampion: {bento['registered_model']} version {bento['registered_version']} ({detector}), "
          f"window {window_s} s; {serve.workers} worker(s) per server; {args.requests} single-window requests, "
          f"{args.seconds:g} s per throughput run")
    print(f"{'server':42s} {'p50 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s} {'batch64 w/s':>12s} {'4 clients':>10s} "
          f"{'after burst p50/p99 ms':>23s}")
    for name, r in results.items():
        after = f"{r['after_burst_p50_ms']:.2f} / {r['after_burst_p99_ms']:.2f}" if "after_burst_p50_ms" in r else ""
        print(f"{name:42s} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['mean_ms']:8.2f} "
              f"{r['batch64_windows_per_s']:12,.0f} {r['batch64_4clients_windows_per_s']:10,.0f} {after:>23s}")
    for name, r in results.items():
        if r is ours_r or name.startswith("BentoML floor") or name in (PACKED, ARROW, ARROW_LZ4, FLOOR, FLOOR_F32,
                                                                       FLOOR_ARROW, FLOOR_ARROW_LZ4):
            continue
        print(f"vs {name}: p99 {r['p99_ms'] / ours_r['p99_ms']:.1f}x lower, batched throughput "
              f"{ours_r['batch64_windows_per_s'] / r['batch64_windows_per_s']:.1f}x higher (JSON numbers)")
    def best(r: dict[str, float]) -> float:
        return max(r["batch64_windows_per_s"], r["batch64_4clients_windows_per_s"])

    for label, r, floor_r, body in (("JSON numbers", ours_r, results[FLOOR], "ours"),
                                    ("vitals_f32", results[PACKED], results[FLOOR_F32], "ours_f32"),
                                    ("Arrow", results[ARROW], results[FLOOR_ARROW], "arrow"),
                                    ("Arrow lz4", results[ARROW_LZ4], results[FLOOR_ARROW_LZ4], "arrow_lz4")):
        p99 = max(r["p99_ms"], r["after_burst_p99_ms"])
        print(f"targets, {label}: p99 <= 5 ms (before and after the burst): {'met' if p99 <= 5 else 'NOT met'} "
              f"({p99:.2f} ms); "
              f">= 10,000 windows/s batched: {'met' if best(r) >= 10000 else 'NOT met'} ({best(r):,.0f}; the payload "
              f"floor, parsing the same {len(batch[body][0]) / 1e6:.1f} MB bodies and nothing else: "
              f"{best(floor_r):,.0f}, so this service reaches {best(r) / best(floor_r):.0%} of it)")
    print(f"credential check and audit entry in process (no HTTP, a real key store): {guarded_us - bare_us:.1f} us a "
          f"request ({guarded_us:.1f} through the guard, {bare_us:.1f} without)")
    g, b = ab["guarded"], ab["bare"]
    print(f"credential check and audit entry over HTTP (the same bento with and without it, both up, 3 turns each of "
          f"{args.requests} single windows, medians): p50 {g['p50_ms']:.3f} vs {b['p50_ms']:.3f} ms "
          f"({g['p50_ms'] - b['p50_ms']:+.3f}; goal <= +0.3 ms), p99 {g['p99_ms']:.2f} vs {b['p99_ms']:.2f} ms; "
          f"per turn p50 {[round(r['p50_ms'], 2) for r in turns['guarded']]} vs "
          f"{[round(r['p50_ms'], 2) for r in turns['bare']]}")
    if args.out:
        write_json({"champion": bento, "requests": args.requests, "seconds": args.seconds, "results": results,
                    "guard_us_per_request": guarded_us - bare_us, "auth_in_turns": turns}, args.out)


if __name__ == "__main__":
    main()
