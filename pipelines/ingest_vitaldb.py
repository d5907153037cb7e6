"""DVC stage `ingest_vitaldb`: real VitalDB cases, labelled like the synthetic cohort.

    python -m pipelines.ingest_vitaldb --out data/vitaldb --metrics metrics/vitaldb.json

When no source yields a case (VitalDB's API unreachable, no local .vital files, empty cache) the
stage writes an empty, correctly typed dataset and a manifest with status "empty" and the reasons,
and says so loudly; the pipeline goes on with synthetic data. Set `ingest_vitaldb.require_data: true`
to make that an error.
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
from biostream.sources.vitaldb import IngestParams, canonical_frame, ingest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--out", required=True, help="output folder (vitals, events, alarm_events, patients)")
    p.add_argument("--metrics", required=True, help="manifest JSON, a DVC metrics file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = configure()
    params = load_params(args.params)
    p = IngestParams.from_params(params)
    configs = Configs.load(args.signals, args.alarms)
    p.cache_dir.mkdir(parents=True, exist_ok=True)  # a DVC output, even when nothing gets downloaded

    def progress(it, total):
        return tqdm(it, total=total, desc="cases", disable=not progress_enabled())

    with timed(log, "collecting cases"):
        result = ingest(p, configs.signals, progress)
    with timed(log, "mapping, cleaning and labelling"):
        signals_df, patients, clean = canonical_frame(result.cases, configs.signals, p.interval_s, p.carry_forward_s)
        ds = build_dataset(
            signals_df, patients, configs, LabelParams.from_params(params), SplitParams.from_params(params),
            interval_s=p.interval_s,
        )
    status = "ok" if len(ds.patients) else "empty"
    sources = ds.patients["source"].value_counts()
    manifest = {
        "dataset": "vitaldb",
        "status": status,
        "reasons": result.notes,
        "cases_by_source": {s: int(sources.get(s, 0)) for s in ("vitaldb-local", "vitaldb-api", "vitaldb-cache")},
        "failed_cases": len(result.failures),
        "failures": result.failures,
        "cleaned_values": clean.counts,
        "cleaned_values_total": clean.total(),
        **summarize(ds, configs),
    }
    if status == "empty":
        msg = "NO VITALDB DATA: " + "; ".join(result.notes + [f["error"] for f in result.failures])
        if p.require_data:
            log.error("%s. ingest_vitaldb.require_data is true: failing. Provide .vital files in %s or "
                      "network access to %s, or set require_data: false.", msg, p.local_dir, p.api_url)
            return 2
        log.warning("%s. Writing an empty dataset; the pipeline continues with synthetic data only. "
                    "Put .vital files in %s or give access to %s to ingest real cases.", msg, p.local_dir, p.api_url)
    write_dataset(ds, args.out, configs)
    write_json(manifest, args.metrics)
    log.info(
        "%d cases (%s), %.1f hours, %d rows, %d failed, %d values cleaned; wrote %s and %s",
        len(ds.patients), ", ".join(f"{k}: {v}" for k, v in manifest["cases_by_source"].items()),
        manifest["hours"], len(ds.vitals), len(result.failures), clean.total(), args.out, args.metrics,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
