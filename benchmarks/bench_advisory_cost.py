"""What the served advisory costs: the champion's scorer with its advisory against the same scorer without one (the
spec's `advisory` emptied), alternated A-B-A-B in one process on one machine, so the ratio holds whatever the
machine's speed.

    python -m benchmarks.bench_advisory_cost [--beds 2000] [--ticks 40] [--rounds 2] [--out FILE]

- `/predict`: `Scorer.predict` of 1, 8 and 64 windows (the model's window, 30 min) of synthetic test patients, p50
  and p99 over `--calls` calls each.
- Bedside streams: a `StreamEngine` over a temporary sqlite store, `--beds` beds sending their newest second each
  tick (what `POST /ingest` runs after parsing), p50 and p99 of a tick after `--warmup` ticks; every bed's history is
  filled first from the test patients, once (a bed's window is full, as on a ward), and each timed engine starts
  from a copy of that store.

Issue #40 asks both p99 within +10% of the scorer without the advisory. Needs `dvc repro` first (the package stage's
bento, the synthetic test patients).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from benchmarks._data import BenchData


def predict_times(scorer, windows: np.ndarray, batch: int, calls: int) -> list[float]:
    items = [SimpleNamespace(array=w, patient_id="bed", time=None) for w in windows]
    out = []
    for i in range(calls):
        a = (i * batch) % max(1, len(items) - batch)
        t0 = time.perf_counter()
        scorer.predict(items[a:a + batch])
        out.append(time.perf_counter() - t0)
    return out


def _params(url: str):
    from biostream.core.params import DEFAULT_MONITOR
    from biostream.serving.database.retention import DEFAULT_RETENTION
    from biostream.serving.streaming.engine import StreamParams

    return StreamParams(store=url, late_s=60, silent_s=120, max_message_s=3600, max_message_beds=4000,
                        max_message_bed_s=10 ** 9, max_skew_s=10 ** 10, state_cache_mb=4096, ack_silence_s=120,
                        ack_worsening=1.0, redis_url=None, shards=4, retention=DEFAULT_RETENTION,
                        monitor=DEFAULT_MONITOR)


START = 1_800_000_000
IDS = [f"bed-{i:05d}" for i in range(100_000)]


def fill(scorer, values: np.ndarray, path: Path) -> None:
    """A store whose beds hold a full window of history (the first `window_s` seconds of `values` (beds, S, T)),
    written once by the scorer with the advisory: each timed engine starts from a copy of it."""
    from biostream.serving.streaming.engine import Chunk, StreamEngine
    from biostream.serving.streaming.store import Store, sqlite_url

    url = sqlite_url(path)
    engine = StreamEngine(scorer, Store(url), _params(url))
    w = scorer.spec.window_s
    for a in range(0, len(values), 200):
        engine.ingest([Chunk(IDS[b], START, values[b, :, :w].copy()) for b in range(a, min(len(values), a + 200))],
                      now=0.0)
    engine.store.dispose()


def stream_times(scorer, values: np.ndarray, ticks: int, warmup: int, template: Path, folder: Path) -> list[float]:
    """Ticks of every bed's next second after the filled history, timed after `warmup` (the engine reads the beds'
    states from its store copy during the first)."""
    from biostream.serving.streaming.engine import Chunk, StreamEngine
    from biostream.serving.streaming.store import Store, sqlite_url

    path = folder / f"streams-{time.monotonic_ns()}.db"
    shutil.copy(template, path)
    url = sqlite_url(path)
    engine = StreamEngine(scorer, Store(url), _params(url))
    w = scorer.spec.window_s
    out = []
    for k in range(warmup + ticks):
        t = w + k
        chunks = [Chunk(IDS[b], START + t, values[b, :, t:t + 1].copy()) for b in range(len(values))]
        t0 = time.perf_counter()
        engine.ingest(chunks, now=float(k + 1))
        if k >= warmup:
            out.append(time.perf_counter() - t0)
    engine.store.dispose()
    path.unlink()
    return out


def summary(times: list[float]) -> dict[str, float]:
    ms = np.asarray(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "n": len(ms)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--beds", type=int, default=2000)
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2, help="A-B rounds (each: with, then without the advisory)")
    p.add_argument("--out", default="results/bench_advisory_cost.json")
    args = p.parse_args(argv)

    from biostream.serving.commands import served_scorer
    from biostream.serving.scorer import Scorer

    served = served_scorer()
    if served.spec.advisor is None:
        raise SystemExit("the served bento carries no advisory: re-run `dvc repro package`")
    plain = Scorer(served.bundle, dataclasses.replace(served.spec, advisory={}))
    data = BenchData.load()
    w = served.spec.window_s
    need = w + args.warmup + args.ticks + 1
    vit = data.dataset.vitals
    signals = list(served.spec.signals)
    recs = [g[signals].to_numpy(np.float64).T for _, g in vit.groupby("patient_id", sort=True) if len(g) >= need]
    if not recs:
        raise SystemExit(f"no synthetic patient has {need} seconds")
    rng = np.random.default_rng(0)
    beds = np.stack([recs[i % len(recs)][:, :need] for i in range(args.beds)])
    windows = np.stack([recs[i % len(recs)][:, t - w:t] for i, t in enumerate(rng.integers(w, need, 512))])

    result: dict[str, dict] = {"predict": {}, "stream": {}}
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "filled.db"
        t0 = time.perf_counter()
        fill(served, beds, template)
        print(f"{args.beds} beds' histories filled in {time.perf_counter() - t0:.0f} s", flush=True)
        for r in range(args.rounds):
            for name, scorer in (("advisory", served), ("none", plain)):
                for batch in (1, 8, 64):
                    predict_times(scorer, windows, batch, 5)  # warm
                    key = f"{batch} windows"
                    result["predict"].setdefault(key, {}).setdefault(name, []).extend(
                        predict_times(scorer, windows, batch, args.calls))
                result["stream"].setdefault(name, []).extend(
                    stream_times(scorer, beds, args.ticks, args.warmup, template, Path(tmp)))
                print(f"round {r + 1}: {name} done", flush=True)
    out = {"advisory": served.spec.advisor.name, "beds": args.beds, "window_s": w, "predict": {}, "stream": {}}
    for key, both in result["predict"].items():
        a, b = summary(both["advisory"]), summary(both["none"])
        out["predict"][key] = {"advisory": a, "none": b, "p99_ratio": round(a["p99_ms"] / b["p99_ms"], 3)}
    a, b = summary(result["stream"]["advisory"]), summary(result["stream"]["none"])
    out["stream"] = {"advisory": a, "none": b, "p99_ratio": round(a["p99_ms"] / b["p99_ms"], 3),
                     "p50_ratio": round(a["p50_ms"] / b["p50_ms"], 3)}
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
