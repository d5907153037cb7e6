"""Benchmark of the feature pipeline: the default cohort's featurisation rate, and one window.

    python -m benchmarks.bench_features [--params params.yaml]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks._data import BenchData
from biostream.core.params import load_params
from biostream.core.runtime import configure
from biostream.features import featurize, window_features


def per_call_ms(fn, repeats: int = 2000) -> tuple[float, float]:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args(argv)
    configure("WARNING")
    data = BenchData.load()
    params = load_params(args.params).featurize
    signals = data.pipeline.signals

    t = time.perf_counter()
    table = featurize(data.dataset.vitals, signals, params)
    took = time.perf_counter() - t
    print(f"cohort: {len(data.dataset.patients)} patients, {len(data.dataset.vitals):,} seconds; window "
          f"{params.geometry.window_s} s x {len(signals)} signals; strides train {params.train_stride_s} s, "
          f"val/test {params.eval_stride_s} s")
    print(f"featurize: {len(table):,} windows in {took:.1f} s -> {len(table) / took:,.0f} windows/s "
          f"(target: default cohort <= 60 s)")

    one = data.windows(table.sample(1, random_state=0))
    med, p99 = per_call_ms(lambda: window_features(one, signals, params.geometry))
    print(f"one window, raw features      : median {med:.3f} ms, p99 {p99:.3f} ms (target <= 1 ms)")
    med, p99 = per_call_ms(lambda: data.pipeline.view("features", one))
    print(f"one window, scaled model input: median {med:.3f} ms, p99 {p99:.3f} ms")
    med, p99 = per_call_ms(lambda: data.pipeline.view("sequence", one))
    print(f"one window, LSTM sequence view: median {med:.3f} ms, p99 {p99:.3f} ms")


if __name__ == "__main__":
    main()
