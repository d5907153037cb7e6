"""Loading the pipeline's outputs for benchmarks (run `dvc repro` first)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biostream.config import Configs
from biostream.dataset import Dataset, read_dataset
from biostream.detectors import BaseDetector
from biostream.detectors.clinical import clinical_params
from biostream.features import InputPipeline, windows_at

CLINICAL = ("hypotension", "tachycardia", "bradycardia", "desaturation", "hypercapnia", "fever")


@dataclass
class BenchData:
    configs: Configs
    dataset: Dataset
    table: pd.DataFrame
    pipeline: InputPipeline

    @classmethod
    def load(cls, root: Path = Path(".")) -> BenchData:
        features = root / "data/features"
        if not (features / "input_pipeline.json").is_file():
            raise SystemExit("data/features is missing: run `dvc repro featurize` first")
        return cls(
            Configs.load(root / "configs/signals.yaml", root / "configs/alarms.yaml"),
            read_dataset(root / "data/synthetic"),
            pd.read_parquet(features / "synthetic.parquet"),
            InputPipeline.from_dict(json.loads((features / "input_pipeline.json").read_text())),
        )

    def windows(self, rows: pd.DataFrame) -> np.ndarray:
        return windows_at(self.dataset.vitals, self.pipeline.signals, self.pipeline.geometry.window_s,
                          rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())

    def view(self, det: BaseDetector, rows: pd.DataFrame) -> np.ndarray:
        return self.pipeline.view_of_rows(det.input_view, rows, self.dataset.vitals)

    def clinical_params(self) -> dict:
        return clinical_params(self.configs)
