"""Benchmark of the `generate` stage's core: how fast the default synthetic cohort is built.

    python -m benchmarks.bench_generate [--params params.yaml] [--repeats 3]

Prints samples per second (rows x signals) and seconds for the cohort with params.yaml's defaults,
generation alone and with labelling and splitting (what the stage does before writing Parquet).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from biostream.core.config import Configs, load_yaml
from biostream.core.params import validate
from biostream.core.runtime import configure
from biostream.data.dataset import build_dataset
from biostream.sources.synthetic import Physiology, generate_cohort


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    configure("WARNING")
    params = load_yaml(args.params)
    p = validate(params)
    cohort_params = p.generate
    configs = Configs.load("configs/signals.yaml", "configs/alarms.yaml")
    phys = Physiology.from_yaml("configs/synthetic.yaml")

    gen, total = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        cohort = generate_cohort(cohort_params, phys, configs.signals)
        t1 = time.perf_counter()
        build_dataset(cohort.vitals, cohort.patients.assign(source="synthetic"), configs,
                      p.labels, p.splits, events=cohort.events)
        t2 = time.perf_counter()
        gen.append(t1 - t0)
        total.append(t2 - t0)
    rows = len(cohort.vitals)
    samples = rows * len(configs.signals.keys)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"cohort: {cohort_params.n_patients} patients, {rows / 3600:.1f} patient-hours, {rows:,} seconds, "
          f"{len(configs.signals.keys)} signals, {len(cohort.events)} injected events")
    print(f"generate only        : median {statistics.median(gen):.2f} s  "
          f"-> {samples / statistics.median(gen):,.0f} samples/s")
    print(f"generate+label+split : median {statistics.median(total):.2f} s  "
          f"-> {samples / statistics.median(total):,.0f} samples/s  (target: default cohort <= 30 s)")


if __name__ == "__main__":
    main()
