"""When a learned model may read a signal: once the patient's own history of it is long enough.

A signal is *read* at a second when it was observed in at least `min_observed` of the last `min_history_s` seconds
(a held cuff reading counts as observed). Until then the learned models see it as not monitored, all missing; a
second at which no signal is read has no learned score, and the bedside rules alarm alone (docs/clinical-safety.md).
Training, evaluation and serving apply the same `Readiness` to the same raw windows
(`biostream.features.pipeline.InputPipeline`), so what a model learns from is what it reads at the bedside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import ConfigError
from biostream.core.params import FeaturizeParams

READ_COLUMN = "signals_read"  # of a feature table: per row, the signals read (bit j: signal j), 0 = no learned score


def read_bits(read: np.ndarray) -> np.ndarray:
    """(n, S) read masks as one integer per row (bit j: signal j), as a feature table stores them."""
    return (np.asarray(read, dtype=np.int64) << np.arange(read.shape[1], dtype=np.int64)).sum(axis=1)


def learned_defined(rows: pd.DataFrame) -> np.ndarray:
    """(n,) whether a learned model scores each row of a feature table (some signal is read); a table made before
    readiness existed: every row."""
    if READ_COLUMN not in rows.columns:
        return np.ones(len(rows), dtype=bool)
    return rows[READ_COLUMN].to_numpy() != 0


@dataclass(frozen=True)
class Readiness:
    """`params.yaml: featurize.min_history_s, min_observed` (0 s: every signal is read from its first value, as
    bundles made before this existed)."""

    min_history_s: int = 0
    min_observed: float = 0.0

    def __post_init__(self) -> None:
        if self.min_history_s < 0 or not 0 <= self.min_observed <= 1:
            raise ConfigError(f"featurize: min_history_s must be >= 0 and min_observed within [0, 1]; got "
                              f"{self.min_history_s} and {self.min_observed}")

    @classmethod
    def of(cls, params: FeaturizeParams) -> Readiness:
        """`params.yaml: featurize`'s readiness."""
        return cls(params.min_history_s, params.min_observed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reads_s(self) -> int:
        """Seconds of raw history the decision reads."""
        return self.min_history_s

    def read(self, windows: np.ndarray) -> np.ndarray:
        """(n, S) whether each signal of raw windows (n, S, >= min_history_s; NaN = missing) is read."""
        x = np.asarray(windows)
        if self.min_history_s <= 0:
            return np.ones(x.shape[:2], dtype=bool)
        if x.shape[2] < self.min_history_s:
            raise ValueError(f"windows of {x.shape[2]} s cannot say whether {self.min_history_s} s were observed")
        observed = (~np.isnan(x[..., -self.min_history_s:])).sum(axis=2)
        return observed >= max(int(np.ceil(self.min_observed * self.min_history_s)), 1)

    def hide(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(windows with every signal that is not read set to missing throughout, the (n, S) read mask). The
        windows are copied only when something is hidden."""
        read = self.read(windows)
        if read.all():
            return windows, read
        out = np.array(windows, copy=True)
        out[~read] = np.nan
        return out, read
