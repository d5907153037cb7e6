"""DVC stage `featurize`: windows -> features for every dataset, and the preprocessor fitted on training
patients.

    python -m pipelines.featurize --synthetic data/synthetic --vitaldb data/vitaldb --out data/features \\
        --metrics metrics/featurize.json
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from biostream.config import Configs, load_yaml
from biostream.dataset import read_dataset
from biostream.features import (
    FeaturizeParams,
    InputPipeline,
    Preprocessor,
    feature_min_scale,
    feature_names,
    featurize,
)
from biostream.io import atomic_dir, write_json, write_parquet
from biostream.runtime import configure, progress_enabled, timed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--signals", default="configs/signals.yaml")
    p.add_argument("--alarms", default="configs/alarms.yaml")
    p.add_argument("--synthetic", required=True, help="the generate stage's output folder")
    p.add_argument("--vitaldb", required=True, help="the ingest_vitaldb stage's output folder")
    p.add_argument("--out", required=True, help="folder for synthetic.parquet, vitaldb.parquet, input_pipeline.json")
    p.add_argument("--metrics", required=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    log = configure()
    params = FeaturizeParams.from_params(load_yaml(args.params))
    configs = Configs.load(args.signals, args.alarms)
    signals = configs.signals.keys
    names = feature_names(signals)

    datasets = {"synthetic": read_dataset(args.synthetic), "vitaldb": read_dataset(args.vitaldb)}
    tables, summary = {}, {}
    for name, ds in datasets.items():
        with timed(log, f"featurizing {name}") as took:
            table = featurize(ds.vitals, signals, params,
                              lambda it, name=name: tqdm(it, desc=f"{name} windows", disable=not progress_enabled()))
        rate = len(table) / took["seconds"] if took["seconds"] > 0 else float("nan")
        log.info("%s: %d windows of %d s x %d signals -> %d features (%.0f windows/s)",
                 name, len(table), params.geometry.window_s, len(signals), len(names), rate)
        tables[name] = table
        summary[name] = {
            "windows": int(len(table)),
            "windows_per_split": {s: int((table["split"] == s).sum()) for s in ("train", "val", "test")},
            "feature_missing_fraction": round(float(table[names].isna().to_numpy().mean()), 4) if len(table) else None,
        }

    synthetic = tables["synthetic"]
    train = synthetic["split"] == "train"
    if not train.any():
        raise SystemExit("featurize: the synthetic dataset has no training patients; raise generate.n_patients")
    vitals = datasets["synthetic"].vitals
    train_vitals = vitals.loc[vitals["split"] == "train", list(signals)].to_numpy(np.float64)
    normal = (synthetic.loc[train, "label"] == 0) & (synthetic.loc[train, "artefact"] == 0)
    pre = Preprocessor.fit(synthetic.loc[train, names].to_numpy(np.float64), train_vitals,
                           min_scale=feature_min_scale(signals, params.geometry), normal=normal.to_numpy())

    with atomic_dir(args.out) as tmp:
        for name, table in tables.items():
            write_parquet(pa.Table.from_pandas(table, preserve_index=False), tmp / f"{name}.parquet")
        pipeline = InputPipeline(tuple(signals), params.geometry, pre)
        write_json(pipeline.to_dict(), tmp / "input_pipeline.json")
    write_json({"features": len(names), "window_s": params.geometry.window_s, **summary}, args.metrics)
    log.info("wrote %s and %s", args.out, args.metrics)


if __name__ == "__main__":
    main()
