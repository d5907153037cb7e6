"""Technical conditions: what a monitor reports about the measurement itself, never a patient alarm.

"new recording: learning baseline" while no signal is read yet (`biostream.features.readiness`: the bedside rules
alarm alone meanwhile), and "<signal>: no signal for N s" for a monitored signal silent for `no_signal_s` or more (a
signal never monitored in the window is no condition: ICU patients have no capnograph). They are reported beside the
alarms and never count as alarms of either class. `window_conditions` reads raw windows (serving),
`series_conditions` whole recordings second by second (evaluation): the same definitions, tested equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from biostream.features.readiness import Readiness

LEARNING = "learning_baseline"
NO_SIGNAL = "no_signal"
LABELS = {"hr": "HR", "spo2": "SpO2", "sbp": "SBP", "dbp": "DBP", "map": "MAP", "rr": "RR", "temp": "Temp",
          "etco2": "EtCO2"}
LEARNING_MESSAGE = "new recording: learning baseline"


@dataclass(frozen=True)
class Conditions:
    """Per second (n,): learning baseline; per second and signal (n, S): seconds without a reading, where that is a
    'no signal' condition (0 elsewhere)."""

    learning: np.ndarray
    silent_s: np.ndarray

    @property
    def no_signal(self) -> np.ndarray:
        return self.silent_s > 0

    def any(self) -> np.ndarray:
        return self.learning | self.no_signal.any(axis=1)

    def messages(self, signals: Sequence[str]) -> list[list[str]]:
        """Per second, what a monitor would show (empty: no condition)."""
        out: list[list[str]] = [[] for _ in range(len(self.learning))]
        for i in np.flatnonzero(self.any()).tolist():
            out[i] = ([LEARNING_MESSAGE] if self.learning[i] else []) + [
                f"{LABELS.get(s, s)}: no signal for {int(self.silent_s[i, j])} s"
                for j, s in enumerate(signals) if self.silent_s[i, j] > 0]
        return out

    def codes(self, signals: Sequence[str]) -> list[list[str]]:
        """Per second, machine-readable codes: `learning_baseline`, `no_signal:<signal>`."""
        return [([LEARNING] if self.learning[i] else [])
                + [f"{NO_SIGNAL}:{s}" for j, s in enumerate(signals) if self.silent_s[i, j] > 0]
                for i in range(len(self.learning))]


def window_conditions(windows: np.ndarray, readiness: Readiness, no_signal_s: int, window_s: int) -> Conditions:
    """The conditions at the last second of raw windows (n, S, >= readiness' history; NaN = missing), looking back
    at most `window_s` seconds."""
    x = np.asarray(windows)[..., -window_s:]
    live = ~np.isnan(x[..., -no_signal_s:]).all(axis=2)  # read something within the last no_signal_s: no condition
    silent_s = np.zeros(x.shape[:2], dtype=np.int64)
    quiet = np.flatnonzero(~live.ravel())
    if len(quiet):  # only the silent signals' whole windows are read (a monitor's usual stream: few or none)
        rev = ~np.isnan(x.reshape(-1, x.shape[2])[quiet, ::-1])
        seen = rev.any(axis=1)
        silent_s.ravel()[quiet] = np.where(seen, rev.argmax(axis=1), 0)
    read = readiness.read(x) if readiness.min_history_s else np.ones(x.shape[:2], dtype=bool)
    return Conditions(~read.any(axis=1) & live.any(axis=1), silent_s)


def series_conditions(values: np.ndarray, readiness: Readiness, no_signal_s: int, window_s: int) -> Conditions:
    """The conditions at every second of one recording (T, S) (NaN = missing): each second as `window_conditions`
    of the window ending there (seconds before the recording are missing)."""
    x = np.asarray(values, dtype=np.float64)
    t, s = x.shape
    observed = ~np.isnan(x)
    idx = np.arange(t)[:, None]
    last = np.maximum.accumulate(np.where(observed, idx, -1), axis=0)  # the newest observed second, -1: none
    silent = idx - last
    seen = (last >= 0) & (silent < window_s)
    silent_s = np.where(seen & (silent >= no_signal_s), silent, 0)
    h = readiness.min_history_s
    if h:
        c = np.vstack([np.zeros((1, s), dtype=np.int64), np.cumsum(observed, axis=0)])
        lo = np.maximum(np.arange(t) - h + 1, 0)
        in_last = c[1:] - c[lo]  # observed seconds among the last h (before the recording: missing)
        read = in_last >= max(int(np.ceil(readiness.min_observed * h)), 1)
        learning = ~read.any(axis=1) & (seen & (silent < no_signal_s)).any(axis=1)
    else:
        learning = np.zeros(t, dtype=bool)
    return Conditions(learning, silent_s.astype(np.int64))
