"""Raw windows -> what a detector reads (`InputPipeline`): the same object for training, evaluation and
serving, stored as `data/features/input_pipeline.json` and inside every model bundle."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.features.compute import feature_names, sequence_view, window_features
from biostream.features.preprocess import Preprocessor
from biostream.features.windows import WindowGeometry, windows_at


@dataclass
class InputPipeline:
    """Raw windows -> a detector's input view. The same object serves training, evaluation and serving."""

    signals: tuple[str, ...]
    geometry: WindowGeometry
    preprocessor: Preprocessor

    def input_length(self, kind: str) -> int:
        """Seconds of history the input view `kind` reads: the sequence view only its last `sequence_s`."""
        return self.geometry.sequence_s if kind == "sequence" else self.geometry.window_s

    def check(self, windows: np.ndarray, kind: str = "window") -> np.ndarray:
        """Raw windows (n, S, >= input_length(kind)), cut to their last `input_length(kind)` seconds (float32
        windows stay float32: the features read float32 values)."""
        windows = np.asarray(windows)
        if not np.issubdtype(windows.dtype, np.floating):
            windows = windows.astype(np.float64)
        need = self.input_length(kind)
        if windows.ndim != 3 or windows.shape[1] != len(self.signals) or windows.shape[2] < need:
            raise ValueError(f"windows must have shape (n, {len(self.signals)} signals, >= {need} seconds), "
                             f"got {windows.shape}")
        return windows[..., windows.shape[2] - need :]

    def features(self, raw_features: np.ndarray) -> np.ndarray:
        """Scaled features from raw features (as the featurize stage stored them)."""
        return self.preprocessor.transform(raw_features)

    def view(self, kind: str, windows: np.ndarray) -> np.ndarray:
        """The input view `kind` ("features", "sequence" or "window") of raw windows (n, S, window_s)."""
        windows = self.check(windows, kind)
        if kind == "window":
            return windows.astype(np.float64, copy=False)
        if kind == "features":  # float32 first, exactly as the featurize stage stores them
            raw = window_features(windows, self.signals, self.geometry).astype(np.float32)
            return self.preprocessor.transform(raw)
        if kind == "sequence":
            return self._sequence(windows)
        raise ValueError(f"unknown input view '{kind}'; expected features, sequence or window")

    def _sequence(self, windows: np.ndarray) -> np.ndarray:
        """The sequence view of windows that end with at least the last `sequence_s` seconds."""
        seq, mask = sequence_view(windows, self.geometry)
        z, m = self.preprocessor.transform_sequence(seq, mask)
        return np.concatenate([z, m], axis=-1)

    def iter_views(
        self, kind: str, rows: pd.DataFrame, vitals: pd.DataFrame, chunk: int = 512, last_s: int | None = None
    ) -> Iterator[np.ndarray]:
        """The input view of rows of a feature table (as `featurize` writes it), `chunk` rows at a time:
        scaled from the stored features, or rebuilt from the raw `vitals` windows for the sequence and
        window views (whole windows of many rows would not fit in memory). `last_s`: of the window view,
        only the last seconds (for a detector that reads no more: `BaseDetector.reads_last_s`)."""
        if kind == "window" and last_s is not None and last_s < self.geometry.window_s:
            for i in range(0, len(rows), chunk):
                part = rows.iloc[i : i + chunk]
                yield windows_at(vitals, self.signals, last_s, part["patient_id"].to_numpy(),
                                 part["time_s"].to_numpy()).astype(np.float64, copy=False)
            return
        for i in range(0, len(rows), chunk):
            part = rows.iloc[i : i + chunk]
            if kind == "features":
                yield self.features(part[feature_names(self.signals)].to_numpy())
            elif kind == "sequence":  # only the tail of each window is read: do not build whole windows
                tails = windows_at(vitals, self.signals, self.geometry.sequence_s, part["patient_id"].to_numpy(),
                                   part["time_s"].to_numpy())
                yield self._sequence(tails)
            else:
                windows = windows_at(vitals, self.signals, self.geometry.window_s, part["patient_id"].to_numpy(),
                                     part["time_s"].to_numpy())
                yield self.view(kind, windows)

    def view_of_rows(self, kind: str, rows: pd.DataFrame, vitals: pd.DataFrame) -> np.ndarray:
        """All of `iter_views` at once (for fitting; the window view of many rows is large)."""
        parts = list(self.iter_views(kind, rows, vitals, chunk=max(len(rows), 1) if kind == "features" else 512))
        return np.concatenate(parts) if parts else np.empty((0,))

    def to_dict(self) -> dict[str, Any]:
        return {"signals": list(self.signals), "geometry": asdict(self.geometry),
                "features": feature_names(self.signals), "preprocessor": self.preprocessor.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputPipeline:
        return cls(tuple(d["signals"]), WindowGeometry(**d["geometry"]), Preprocessor.from_dict(d["preprocessor"]))

