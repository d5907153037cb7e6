"""DVC stage `generate`: the synthetic cohort with labelled anomalies.

    python -m pipelines.generate --out data/synthetic --metrics metrics/synthetic.json
"""

from __future__ import annotations

import argparse

from tqdm import tqdm

from biostream.core.config import Configs, LabelParams, SplitParams
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure, progress_enabled, timed
from biostream.data.dataset import build_dataset, summarize, write_dataset
from biostream.sources.synthetic import CohortParams, Physiology, generate_cohort


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--physiology", default="configs/synthetic.yaml")
    p.add_argument("--out", required=True, help="output folder (vitals, events, alarm_events, patients)")
    p.add_argument("--metrics", required=True, help="manifest JSON, a DVC metrics file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    cohort_params = CohortParams.from_params(params)
    configs = Configs.load(args.signals, args.alarms)
    phys = Physiology.from_yaml(args.physiology)

    with timed(log, "generating the cohort") as gen_time:
        bar = tqdm(range(cohort_params.n_patients), desc="patients", disable=not progress_enabled())
        cohort = generate_cohort(cohort_params, phys, configs.signals, progress=bar)
        patients = cohort.patients.assign(source="synthetic")
        ds = build_dataset(
            cohort.vitals,
            patients,
            configs,
            LabelParams.from_params(params),
            SplitParams.from_params(params),
            events=cohort.events,
        )
    rows = len(ds.vitals)
    log.info(
        "%d patients, %.1f hours, %d rows, %d injected events, %d alarm events; %.0f samples/s (rows x signals)",
        len(ds.patients), ds.patients["hours"].sum(), rows, len(ds.events), len(ds.alarm_events),
        rows * len(configs.signals.keys) / gen_time["seconds"],
    )
    with timed(log, "writing outputs"):
        write_dataset(ds, args.out, configs)
        manifest = {"dataset": "synthetic", "status": "ok", **summarize(ds, configs)}
        write_json(manifest, args.metrics)
    log.info("wrote %s and %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
