"""Loading the pipeline's outputs for benchmarks (run `dvc repro` first)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from biostream.core.config import Configs
from biostream.data.dataset import Dataset
from biostream.features import InputPipeline, windows_at
from biostream.features.table import FeatureSet
from biostream.models.detectors import BaseDetector
from biostream.sources.synthetic import CLINICAL_KINDS as CLINICAL  # noqa: F401  (re-exported for benchmarks)


@dataclass
class BenchData:
    configs: Configs
    dataset: Dataset
    table: pd.DataFrame
    pipeline: InputPipeline

    @classmethod
    def load(cls, root: Path = Path(".")) -> BenchData:
        try:
            features = FeatureSet.open(root / "data/features", {"synthetic": root / "data/synthetic"})
            table, dataset = features.source("synthetic")
        except FileNotFoundError as exc:
            raise SystemExit(f"{exc}: run `dvc repro featurize` first") from None
        return cls(Configs.load(root / "configs/signals.yaml", root / "configs/alarms.yaml"), dataset, table,
                   features.pipeline)

    def windows(self, rows: pd.DataFrame) -> np.ndarray:
        return windows_at(self.dataset.vitals, self.pipeline.signals, self.pipeline.geometry.window_s,
                          rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())

    def view(self, det: BaseDetector, rows: pd.DataFrame) -> np.ndarray:
        return self.pipeline.view_of_rows(det.input_view, rows, self.dataset.vitals)
