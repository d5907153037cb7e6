"""DVC stages `ingest_recordings` and `ingest_real`: recordings (CSV or Parquet, one file per case), labelled like
every dataset.

    python -m pipelines.ingest_recordings --out data/recordings --metrics metrics/recordings.json
    python -m pipelines.ingest_recordings --dataset real --out data/real --metrics metrics/real.json

`--dataset recordings` (default) reads your own recordings (`params.yaml: ingest_recordings`); `--dataset real` the
project's real reference recordings (`params.yaml: ingest_real`, data/external/real/README.md).

Reads every `.csv` and `.parquet` file of `ingest_recordings.folder` (`biostream.sources.recordings`: a time
column or 1-Hz rows, a column per canonical signal or per device track of configs/signals.yaml). A file that cannot
be used is skipped and listed under `failures` with a message naming file, row and column; the others are kept.
With no file, the stage writes an empty, correctly typed dataset and says so; set
`ingest_recordings.require_data: true` to make that an error (exit code 2, nothing written).
"""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from biostream.core.config import Configs, LabelParams, SplitParams
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure, progress_enabled, timed
from biostream.data.dataset import build_dataset, summarize, write_dataset
from biostream.sources.canonical import canonical_frame
from biostream.sources.recordings import SOURCES, RecordingsParams, ingest_recordings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--dataset", default="recordings", choices=sorted(SOURCES),
                   help="recordings: params.yaml ingest_recordings; real: params.yaml ingest_real")
    p.add_argument("--out", required=True, help="output folder (vitals, events, alarm_events, patients)")
    p.add_argument("--metrics", required=True, help="manifest JSON, a DVC metrics file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    section = "ingest_recordings" if args.dataset == "recordings" else f"ingest_{args.dataset}"
    p = RecordingsParams.from_params(params, section)
    configs = Configs.load(args.signals, args.alarms)
    with timed(log, "reading recordings"):
        result = ingest_recordings(p, configs.signals,
                                   lambda it, n: tqdm(it, total=n, desc=args.dataset, disable=not progress_enabled()),
                                   source=args.dataset)
    with timed(log, "mapping, cleaning and labelling"):
        signals_df, patients, clean = canonical_frame(result.cases, configs.signals, 1, p.carry_forward_s, p.hold_s)
        ds = build_dataset(signals_df, patients, configs, LabelParams.from_params(params),
                           SplitParams.from_params(params), interval_s=1)
    status = "ok" if len(ds.patients) else "empty"
    manifest = {"dataset": args.dataset, "status": status, "reasons": result.notes, "cases": int(len(ds.patients)),
                "failed_cases": len(result.failures), "failures": result.failures,
                "ignored_columns": result.ignored_columns, "cleaned_values": clean.counts,
                "cleaned_values_total": clean.total(), **summarize(ds, configs)}
    if status == "empty":
        msg = f"no {args.dataset} recordings: " + "; ".join(result.notes + [f["error"] for f in result.failures])
        if p.require_data:
            log.error("%s. %s.require_data is true: failing. Put CSV or Parquet recordings in %s.", msg, section,
                      p.folder)
            return 2
        log.info("%s; writing an empty dataset (put CSV or Parquet recordings in %s to use them)", msg, p.folder)
    write_dataset(ds, args.out, configs)
    write_json(manifest, args.metrics)
    log.info("%d recordings, %.1f hours, %d failed, %d values cleaned; wrote %s and %s", len(ds.patients),
             manifest["hours"], len(result.failures), clean.total(), args.out, args.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
