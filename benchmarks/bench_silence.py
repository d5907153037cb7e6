"""What closing a ward that fell silent together costs the other beds: the stall a sweep adds between two batches,
against the slowest normal tick of the same run (issue #42: "at most the slowest normal tick").

    python -m benchmarks.bench_silence [--beds 2000] [--history 300] [--ticks 30] [--store postgresql|sqlite]

One process, the served champion (`results/bento.json`), a fresh store (a temporary PostgreSQL database by default:
the service's scale store). `--beds` beds get `--history` seconds, then `--ticks` ticks of every bed's next second
(timed: the floor). Then every bed falls silent: a sweep closes them a step at a time (`CLOSE_STEP` beds per
transaction, as the service does between batches; each step timed), from another engine than the one that scored
them (no state cached: what a second consumer or a restarted worker finds), and, after the beds come back with new
recordings (their first tick timed with the others: nothing of their past is read) and tick again, in one
transaction (the behaviour before #42: one sweep of every silent bed). Prints p50/p99/max of the ticks, each step's
and the one sweep's milliseconds, and the ratios to the slowest tick.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.bench_advisory_cost import IDS, START, _params
from benchmarks.bench_streams import PG
from biostream.core.io import write_json


def ticks(engine, values: np.ndarray, first: int, n: int, now: float) -> list[float]:
    from biostream.serving.streaming.engine import Chunk

    out = []
    for k in range(n):
        chunks = [Chunk(IDS[b], START + first + k, values[b, :, (first + k) % values.shape[2]][:, None].copy())
                  for b in range(len(values))]
        t0 = time.perf_counter()
        engine.ingest(chunks, now=now + k)
        out.append(time.perf_counter() - t0)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beds", type=int, default=2000)
    p.add_argument("--history", type=int, default=300)
    p.add_argument("--ticks", type=int, default=30)
    p.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--out", default="results/bench_silence.json")
    args = p.parse_args(argv)

    import sqlalchemy as sa

    from benchmarks._data import BenchData
    from biostream.serving.commands import served_scorer
    from biostream.serving.streaming import engine as engine_module
    from biostream.serving.streaming.engine import Chunk, StreamEngine
    from biostream.serving.streaming.store import Store, sqlite_url

    scorer = served_scorer()
    signals = list(scorer.spec.signals)
    vit = BenchData.load().dataset.vitals
    recs = [g[signals].to_numpy(np.float64).T for _, g in vit.groupby("patient_id", sort=True)]
    n = args.history + 2 * args.ticks + 10
    values = np.stack([recs[i % len(recs)][:, :n] for i in range(args.beds)])

    name = f"bench_silence_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT") if args.store == "postgresql" else None
    if admin is not None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = f"{PG}/{name}"
    else:
        url = sqlite_url(Path("results") / f"{name}.db")
    try:
        params = _params(url)
        engine = StreamEngine(scorer, Store(url), params)
        for a in range(0, args.beds, 200):  # each bed's history, its recording opened
            engine.ingest([Chunk(IDS[b], START, values[b, :, :args.history].copy())
                           for b in range(a, min(args.beds, a + 200))], now=0.0)
        normal = ticks(engine, values, args.history, args.ticks, 1.0)
        silent_at = 1.0 + args.ticks + params.silent_s + 1
        steps = []
        sweeper = StreamEngine(scorer, Store(url), params)  # another process's: no bed state cached (the worst case)
        while True:  # the service's sweep: a step at a time
            t0 = time.perf_counter()
            sweeper.sweep(now=silent_at)
            steps.append(time.perf_counter() - t0)
            if not sweeper.more_silent:
                break
        # new recordings (more than silent_s later), ticking again; then every bed closed in one sweep
        again = args.history + args.ticks + params.silent_s + 5
        normal += ticks(engine, values, again, args.ticks, silent_at + 10)
        sweeper = StreamEngine(scorer, Store(url), params)
        t0 = time.perf_counter()
        sweeper.sweep(now=silent_at + 10 + args.ticks + params.silent_s + 1, step=args.beds)
        at_once = time.perf_counter() - t0
        engine.store.dispose()
        sweeper.store.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        else:
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    ms = np.asarray(normal) * 1e3
    slowest = float(ms.max())
    out = {"beds": args.beds, "store": args.store, "close_step": engine_module.CLOSE_STEP,
           "ticks": {"p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1),
                     "max_ms": round(slowest, 1), "n": len(ms)},
           "steps_ms": [round(s * 1e3, 1) for s in steps],
           "slowest_step_vs_slowest_tick": round(max(steps) * 1e3 / slowest, 2),
           "one_sweep_ms": round(at_once * 1e3, 1), "one_sweep_vs_slowest_tick": round(at_once * 1e3 / slowest, 2)}
    print(json.dumps(out, indent=1))
    write_json(out, args.out)
    return out


if __name__ == "__main__":
    main()
