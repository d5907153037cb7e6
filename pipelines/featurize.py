"""DVC stage `featurize`: windows -> features for every dataset, and the preprocessor fitted on the training
patients of the sources the models learn from (`params.yaml: sources.train`).

    python -m pipelines.featurize --synthetic data/synthetic --vitaldb data/vitaldb --recordings data/recordings \\
        --real data/real --out data/features --metrics metrics/featurize.json
"""

from __future__ import annotations

import argparse

import pandas as pd
from tqdm import tqdm

from biostream.core.config import Configs
from biostream.core.io import write_json
from biostream.core.params import load_params
from biostream.core.runtime import configure, progress_enabled, timed
from biostream.data.dataset import read_dataset
from biostream.features import (
    FeaturizeParams,
    InputPipeline,
    feature_names,
    featurize,
)
from biostream.features.preprocess import fit_on_training
from biostream.features.table import SourceParams, write_feature_set


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--synthetic", required=True, help="the generate stage's output folder")
    p.add_argument("--vitaldb", required=True, help="the ingest_vitaldb stage's output folder")
    p.add_argument("--recordings", required=True, help="the ingest_recordings stage's output folder")
    p.add_argument("--real", required=True, help="the ingest_real stage's output folder")
    p.add_argument("--out", required=True, help="folder for one <dataset>.parquet each, input_pipeline.json")
    p.add_argument("--metrics", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    raw_params = load_params(args.params)
    params = FeaturizeParams.from_params(raw_params)
    train_sources = SourceParams.from_params(raw_params).train
    configs = Configs.load(args.signals, args.alarms)
    signals = configs.signals.keys
    names = feature_names(signals)

    datasets = {"synthetic": read_dataset(args.synthetic), "vitaldb": read_dataset(args.vitaldb),
                "recordings": read_dataset(args.recordings), "real": read_dataset(args.real)}
    tables, summary = {}, {}
    for name, ds in datasets.items():
        with timed(log, f"featurizing {name}") as took:
            table = featurize(ds.vitals, signals, params,
                              lambda it, name=name: tqdm(it, desc=f"{name} windows", disable=not progress_enabled()),
                              learned_from=name in train_sources)
        rate = len(table) / took["seconds"] if took["seconds"] > 0 else float("nan")
        log.info("%s: %d windows of %d s x %d signals -> %d features (%.0f windows/s)",
                 name, len(table), params.geometry.window_s, len(signals), len(names), rate)
        tables[name] = table
        summary[name] = {
            "windows": int(len(table)),
            "windows_per_split": {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
            "feature_missing_fraction": round(float(table[names].isna().to_numpy().mean()), 4) if len(table) else None,
        }

    # the scaler is fitted on the training patients of the sources the models learn from (params.yaml: sources.train)
    table = pd.concat([tables[s] for s in train_sources], ignore_index=True)
    vitals = pd.concat([datasets[s].vitals for s in train_sources], ignore_index=True)
    try:
        pre = fit_on_training(table, vitals, signals, params.geometry)
    except ValueError as exc:
        raise SystemExit(f"featurize: {exc} (sources.train: {', '.join(train_sources)})") from None
    write_feature_set(args.out, tables, InputPipeline(tuple(signals), params.geometry, pre, params.readiness))
    write_json({"features": len(names), "window_s": params.geometry.window_s, **summary}, args.metrics)
    log.info("wrote %s and %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
