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
from biostream.features.readiness import Readiness
from biostream.features.windows import WindowGeometry, windows_at

LEARNED_VIEWS = ("features", "sequence")  # what learned models read: only the signals `Readiness` lets them read


@dataclass
class InputPipeline:
    """Raw windows -> a detector's input view. The same object serves training, evaluation and serving."""

    signals: tuple[str, ...]
    geometry: WindowGeometry
    preprocessor: Preprocessor
    readiness: Readiness = Readiness()

    def input_length(self, kind: str) -> int:
        """Seconds of history the input view `kind` reads: the sequence view only its last `sequence_s` (and what
        readiness reads)."""
        if kind == "sequence":
            return max(self.geometry.sequence_s, self.readiness.reads_s)
        return self.geometry.window_s

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
        return self.view_and_read(kind, windows)[0]

    def view_and_read(self, kind: str, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The input view `kind` of raw windows and the (n, S) signals it reads: a learned view only the signals
        `readiness` lets it read (the others as missing throughout); the window view (the rules) every signal."""
        windows = self.check(windows, kind)
        if kind == "window":
            return windows.astype(np.float64, copy=False), np.ones(windows.shape[:2], dtype=bool)
        if kind not in LEARNED_VIEWS:
            raise ValueError(f"unknown input view '{kind}'; expected features, sequence or window")
        read = self.readiness.read(windows)
        if kind == "features":  # float32 first, exactly as the featurize stage stores them
            raw = window_features(windows, self.signals, self.geometry, read).astype(np.float32)
            return self.preprocessor.transform(raw), read
        return self._sequence(windows, read), read

    def _sequence(self, windows: np.ndarray, read: np.ndarray) -> np.ndarray:
        """The sequence view of windows that end with at least the last `sequence_s` seconds, the signals not
        `read` as missing."""
        tail = windows[..., windows.shape[2] - self.geometry.sequence_s :]
        seq, mask = sequence_view(np.where(read[..., None], tail, np.nan), self.geometry)
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
                tails = windows_at(vitals, self.signals, self.input_length(kind), part["patient_id"].to_numpy(),
                                   part["time_s"].to_numpy())
                yield self._sequence(tails, self.readiness.read(tails))
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
                "features": feature_names(self.signals), "preprocessor": self.preprocessor.to_dict(),
                "readiness": self.readiness.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputPipeline:
        return cls(tuple(d["signals"]), WindowGeometry(**d["geometry"]), Preprocessor.from_dict(d["preprocessor"]),
                   Readiness(**d.get("readiness", {})))

