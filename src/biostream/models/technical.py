"""Technical signatures: whether a window's recent history shows a measurement problem, per signal.

An alarm is technical ("check the probe") when the signal driving it shows a signature of the measurement, not of
the patient: a jump, erratic readings, a frozen value, a gap, a flush or noise (`TechnicalChecks`;
`configs/technical.yaml` says which and why). Which signatures demote which alarm is `Flags.rule_technical` (a
rule) and `Flags.any_signal` (a learned model's alarm). Pure numpy over (n, S, T) windows, vectorised.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biostream.core.config import ConfigError, load_yaml, require

FLUSH_SIGNALS = ("sbp", "dbp", "map")


@dataclass(frozen=True)
class TechnicalChecks:
    """`configs/technical.yaml`: the signatures of the measurement that `flags` finds, per signal.

    * a *jump*: a 1-s change beyond the signal's `jump` while the signal was live (it changed in the `live_s`
      seconds before: a new cuff reading replacing a held one is not a jump); *erratic*: two or more jumps;
    * *frozen*: the value unchanged for `frozen_s` seconds in a signal that changed in at least
      `continuous_fraction` of its earlier seconds (not a held cuff value, not SpO2 resting at 100 %);
    * a *gap*: a signal of `gap_signals` read nothing at some second of the last `lookback_s` while it read most of
      the time before (a probe off and on again);
    * a *flush*: SBP - DBP under `flush_pulse_pressure` in 3 of the last 10 seconds (an arterial line flushed or
      damped);
    * *noise*: the mean 1-s step over the last minute `noise_ratio` times the earlier one.

    Jumps and gaps mark a signal for `lookback_s` after them (an ECG double count lasts minutes after its jump).
    """

    context_s: int
    jump: Mapping[str, float]
    live_s: int
    lookback_s: int
    gap_signals: tuple[str, ...]
    frozen_s: int
    continuous_fraction: float
    flush_pulse_pressure: float
    noise_ratio: float
    no_signal_s: int = 60  # a monitored signal silent this long is a technical condition (bundles before: 60)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TechnicalChecks:
        return cls.from_dict(load_yaml(path), str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str = "technical checks") -> TechnicalChecks:
        out = cls(
            context_s=int(require(raw, "context_s", where)),
            jump={str(k): float(v) for k, v in require(raw, "jump", where).items()},
            live_s=int(require(raw, "live_s", where)),
            lookback_s=int(require(raw, "lookback_s", where)),
            gap_signals=tuple(str(k) for k in require(raw, "gap_signals", where)),
            frozen_s=int(require(raw, "frozen_s", where)),
            continuous_fraction=float(require(raw, "continuous_fraction", where)),
            flush_pulse_pressure=float(require(raw, "flush_pulse_pressure", where)),
            noise_ratio=float(require(raw, "noise_ratio", where)),
            no_signal_s=int(raw.get("no_signal_s", 60)),
        )
        shortest = min(out.context_s, out.live_s, out.lookback_s, out.frozen_s, out.no_signal_s)
        if shortest < 1 or out.lookback_s >= out.context_s:
            raise ConfigError(f"{where}: context_s, live_s, lookback_s, frozen_s and no_signal_s must be >= 1, and "
                              f"lookback_s shorter than context_s ({out.lookback_s} >= {out.context_s})")
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gap_signals"] = list(self.gap_signals)
        return d

    def flags(self, X: np.ndarray, signals: Sequence[str], valid_max: Mapping[str, float] | None = None) -> Flags:
        """The signatures of raw windows (n, S, W >= 2; NaN = missing), per signal. `valid_max`: each signal's
        highest possible value (SpO2's 100 % is a resting value, not a frozen sensor)."""
        x = np.asarray(X, dtype=np.float64)[..., -self.context_s :]
        n, s, t = x.shape
        d = np.diff(x, axis=2)  # NaN where either second is missing
        observed = ~np.isnan(d)
        changed = observed & (d != 0)
        thr = np.array([self.jump.get(k, np.inf) for k in signals])[None, :, None]
        # live: a change within the `live_s` steps before each step
        c = np.concatenate([np.zeros((n, s, 1)), np.cumsum(changed, axis=2)], axis=2)
        idx = np.arange(t - 1)
        live = (c[..., idx] - c[..., np.maximum(idx - self.live_s, 0)]) > 0
        with np.errstate(invalid="ignore"):
            jumps = observed & (np.abs(d) >= thr) & live
            up = jumps & (d > 0)
        look = min(self.lookback_s, t - 1)
        n_jumps = jumps[..., -look:].sum(axis=2)
        # frozen: the trailing run of unchanged, observed steps, in a signal that changed before it
        still = observed & (d == 0)
        run = np.cumprod(still[..., ::-1], axis=2).sum(axis=2)
        before = np.arange(t - 1)[None, None, :] < (t - 1 - run)[..., None]
        seen_before = (observed & before).sum(axis=2)
        fraction = np.where(seen_before > 0, (changed & before).sum(axis=2) / np.maximum(seen_before, 1), 0.0)
        top = np.array([(valid_max or {}).get(k, np.inf) for k in signals])[None, :]
        frozen = (run >= self.frozen_s) & (fraction >= self.continuous_fraction) & (x[..., -1] < top)
        # a gap: missing within the lookback, after reading most of the time before it
        missing = np.isnan(x)
        read_before = (~missing[..., : t - look]).mean(axis=2) if t > look else np.zeros((n, s))
        gap_cols = np.array([k in self.gap_signals for k in signals])
        gap = missing[..., -look:].any(axis=2) & (read_before >= 0.5) & gap_cols[None, :]
        # noise: the last minute's mean step against the earlier ones'
        minute = min(60, t - 2)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a signal with no step in a stretch: mean of nothing
            recent = np.nanmean(np.where(observed, np.abs(d), np.nan)[..., -minute:], axis=2)
            usual = np.nanmean(np.where(observed, np.abs(d), np.nan)[..., :-minute], axis=2) if t - 1 > minute \
                else np.full((n, s), np.nan)
            noise = (usual > 0) & (recent >= self.noise_ratio * usual)
        flush = np.zeros(n, dtype=bool)
        if {"sbp", "dbp"} <= set(signals):
            pp = x[:, list(signals).index("sbp"), -10:] - x[:, list(signals).index("dbp"), -10:]
            with np.errstate(invalid="ignore"):
                flush = (pp < self.flush_pulse_pressure).sum(axis=1) >= 3
        flush_cols = np.array([k in FLUSH_SIGNALS for k in signals])
        return Flags(jump_up=up[..., -look:].any(axis=2), erratic=n_jumps >= 2, any_jump=n_jumps >= 1,
                     frozen=frozen, gap=gap, noise=noise, flush=flush[:, None] & flush_cols[None, :])


@dataclass(frozen=True)
class Flags:
    """Per window and signal (n, S) booleans: the signatures of `TechnicalChecks.flags`."""

    jump_up: np.ndarray
    erratic: np.ndarray
    any_jump: np.ndarray
    frozen: np.ndarray
    gap: np.ndarray
    noise: np.ndarray
    flush: np.ndarray

    def any_signal(self) -> np.ndarray:
        """(n,) some signal shows some signature: what makes a learned model's alarm technical."""
        return (self.any_jump | self.frozen | self.gap | self.noise | self.flush).any(axis=1)

    def rule_technical(self, signal: int, above: bool) -> np.ndarray:
        """(n,) whether an alarm of a rule on `signal` (an upper limit when `above`) is the measurement's doing. An
        upper limit: a frozen value, a jump up (an ECG double count), erratic readings, noise or a flush; a lower
        limit: only a frozen value, erratic readings or a gap (a single abrupt fall may be the patient)."""
        i = signal
        if above:
            return self.frozen[:, i] | self.jump_up[:, i] | self.erratic[:, i] | self.noise[:, i] | self.flush[:, i]
        return self.frozen[:, i] | self.erratic[:, i] | self.gap[:, i]
