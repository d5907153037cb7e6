"""What a model saw at training time, kept in its bundle (`reference.json`): per signal the deciles of the training
patients' values and the share of seconds without one, and the validation alarm episodes per bed-hour by class.
A period's drift is the population stability index (PSI) of its values over the reference's deciles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BINS = 10
NULL_BEDS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # bed counts whose PSI among training patients the reference keeps
NULL_DRAWS = 40
STRETCH_S = 600  # a draw takes 10-min stretches of patients: a live period is at least that (stream.monitor)
EPS = 1e-4  # an empty bin's share in the PSI (the usual floor: a bin empty on one side does not make it infinite)


@dataclass(frozen=True)
class SignalReference:
    edges: list[float]  # the inner bin edges (deciles of the observed values, repeated ones merged)
    shares: list[float]  # the share of observed values in each bin (len(edges) + 1)
    missing: float  # the share of seconds without a value, of the patients monitoring the signal (a value at all)
    seconds: int
    # [beds, PSI]: the largest PSI of `beds` 10-min stretches of training patients drawn at random against all of
    # them (NULL_DRAWS draws): how far that many beds of the training population already stray (few beds stray far)
    null_psi: list[list[float]]

    def psi_limit(self, beds: int, floor: float) -> float:
        """The PSI above which `beds` beds have drifted: `floor`, or what that many training patients reach."""
        if not self.null_psi:
            return floor
        n = np.array([b for b, _ in self.null_psi], dtype=np.float64)
        v = np.array([p for _, p in self.null_psi], dtype=np.float64)
        return max(floor, float(np.interp(np.log(max(beds, 1)), np.log(n), v)))


@dataclass(frozen=True)
class Reference:
    signals: dict[str, SignalReference]
    alarms_per_hour: dict[str, float]  # validation alarm episodes per bed-hour, by class
    made_from: str  # which patients

    @classmethod
    def of(cls, values: np.ndarray, signals: Sequence[str], alarms_per_hour: Mapping[str, float],
           made_from: str, patients: np.ndarray | None = None) -> Reference:
        """The reference of (n, S) values (NaN = missing), `patients` (n,) the patient of each row."""
        out = {}
        rng = np.random.default_rng(0)
        groups = []
        if patients is not None:
            codes = np.unique(np.asarray(patients), return_inverse=True)[1].ravel()
            order = np.argsort(codes, kind="stable")
            groups = [g[a:a + STRETCH_S] for g in np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
                      for a in range(0, len(g), STRETCH_S) if len(g) - a >= STRETCH_S // 2]
        for j, s in enumerate(signals):
            col = values[:, j]
            seen = col[~np.isnan(col)]
            null: list[list[float]] = []
            if len(seen):
                edges = np.unique(np.quantile(seen, np.arange(1, BINS) / BINS))
                shares = bin_shares(seen, edges)
                counts = [np.bincount(np.searchsorted(edges, col[g][~np.isnan(col[g])], side="right"),
                                      minlength=len(edges) + 1) for g in groups]
                for beds in NULL_BEDS if len(groups) > 1 else ():
                    draws = []
                    for _ in range(NULL_DRAWS):
                        c = np.sum([counts[k] for k in rng.integers(0, len(groups), beds)], axis=0)
                        if c.sum():
                            draws.append(psi(shares, c / c.sum()))
                    null.append([float(beds), float(max(draws, default=0.0))])
            else:
                edges, shares = np.empty(0), np.ones(1)
            monitored = [g for g in groups if (~np.isnan(col[g])).any()] if groups else [np.arange(len(col))]
            rows = np.concatenate(monitored) if monitored else np.empty(0, dtype=np.int64)
            missing = float(np.isnan(col[rows]).mean()) if len(rows) else 1.0
            out[s] = SignalReference([float(e) for e in edges], [float(x) for x in shares], missing, int(len(col)),
                                     null)
        return cls(out, {k: float(v) for k, v in alarms_per_hour.items()}, made_from)

    def to_dict(self) -> dict[str, Any]:
        return {"signals": {s: asdict(r) for s, r in self.signals.items()}, "alarms_per_hour": self.alarms_per_hour,
                "made_from": self.made_from}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reference:
        return cls({s: SignalReference(**r) for s, r in d["signals"].items()}, dict(d["alarms_per_hour"]),
                   str(d["made_from"]))


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of `values` in each bin the inner `edges` make (a value on an edge goes to the bin above)."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(1, counts.sum())


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """The population stability index of two binnings' shares: sum (live - ref) * ln(live / ref)."""
    p = np.maximum(np.asarray(reference, dtype=np.float64), EPS)
    q = np.maximum(np.asarray(live, dtype=np.float64), EPS)
    return float(np.sum((q - p) * np.log(q / p)))
