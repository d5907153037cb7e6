"""Device tracks -> canonical signals, for any source of monitor recordings: each alias track cleaned to the
signal's physiologically possible range (counted per reason), carried forward over short gaps, merged in
priority order (`configs/signals.yaml`), and the per-second frame and patients table of many cases."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from biostream.core.config import SignalCatalog, TrackAlias

CLEAN_REASONS = ("below_valid", "above_valid", "dbp_not_below_sbp")


@dataclass
class CleanCounts:
    """Values set to missing, per signal and reason."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, signal: str, reason: str, n: int) -> None:
        if n:
            per = self.counts.setdefault(signal, {r: 0 for r in CLEAN_REASONS})
            per[reason] += int(n)

    def merge(self, other: CleanCounts) -> None:
        for s, per in other.counts.items():
            for r, n in per.items():
                self.add(s, r, n)

    def total(self) -> int:
        return sum(sum(per.values()) for per in self.counts.values())


def to_canonical(
    raw: pd.DataFrame, catalog: SignalCatalog, interval_s: int, carry_forward_s: int,
    own_hold_s: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, CleanCounts]:
    """Map device tracks onto canonical signals and clean them.

    Per signal: each alias track is cleaned to the signal's valid range, carried forward over short
    gaps (`carry_forward_s`, monitors report numerics every 1-2 s; `hold_s` for intermittent cuff
    readings), then the aliases are merged in priority order. A column named by the signal itself (a
    recording exported with canonical names) comes first, held `own_hold_s[signal]` seconds (default: only
    `carry_forward_s`). Finally, rows whose diastolic pressure is not below the systolic lose all three
    pressures.
    """
    counts = CleanCounts()
    n = len(raw)
    out: dict[str, np.ndarray] = {}
    for spec in catalog.signals:
        merged = np.full(n, np.nan, dtype=np.float32)
        lo, hi = spec.valid
        own = TrackAlias(spec.key, int((own_hold_s or {}).get(spec.key, 0)))
        for alias in (own, *spec.tracks):
            if alias.track not in raw.columns:
                continue
            x = raw[alias.track].to_numpy(dtype=np.float32, copy=True)
            with np.errstate(invalid="ignore"):
                below, above = x < lo, x > hi
            counts.add(spec.key, "below_valid", below.sum())
            counts.add(spec.key, "above_valid", above.sum())
            x[below | above] = np.nan
            limit = max(alias.hold_s, carry_forward_s) // interval_s
            if limit > 0:
                x = pd.Series(x).ffill(limit=limit).to_numpy(dtype=np.float32)
            merged = np.where(np.isnan(merged), x, merged)
        out[spec.key] = merged
    if {"sbp", "dbp", "map"} <= out.keys():
        with np.errstate(invalid="ignore"):
            bad = out["dbp"] >= out["sbp"]
        for s in ("sbp", "dbp", "map"):
            counts.add(s, "dbp_not_below_sbp", (bad & ~np.isnan(out[s])).sum())
            out[s] = np.where(bad, np.nan, out[s]).astype(np.float32)
    return pd.DataFrame(out), counts


@dataclass(frozen=True)
class Case:
    patient_id: str
    source: str  # vitaldb-local | vitaldb-api | vitaldb-cache
    raw: pd.DataFrame


def canonical_frame(
    cases: Sequence[Case], catalog: SignalCatalog, interval_s: int, carry_forward_s: int,
    own_hold_s: Mapping[str, int] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, CleanCounts]:
    """The per-second signals of all cases (sorted by patient and time) and their patients table."""
    frames, patients = [], []
    counts = CleanCounts()
    for case in cases:
        sig, c = to_canonical(case.raw, catalog, interval_s, carry_forward_s, own_hold_s)
        counts.merge(c)
        n = len(sig)
        if n == 0:
            continue
        sig.insert(0, "time_s", (np.arange(n) * interval_s).astype(np.int32))
        sig.insert(0, "patient_id", case.patient_id)
        frames.append(sig)
        own = TrackAlias("map", int((own_hold_s or {}).get("map", 0)))
        has_art = any(
            a.track in case.raw.columns and a.hold_s == 0 and case.raw[a.track].notna().any()
            for a in (own, *catalog["map"].tracks)
        )
        has_bp = sig["map"].notna().any()
        patients.append(
            {
                "patient_id": case.patient_id,
                "source": case.source,
                "hours": n * interval_s / 3600.0,
                "bp_mode": "arterial" if has_art else ("nibp" if has_bp else "none"),
            }
        )
    if not frames:
        cols = ["patient_id", "time_s", *catalog.keys]
        return pd.DataFrame(columns=cols), pd.DataFrame(columns=["patient_id", "source", "hours", "bp_mode"]), counts
    df = pd.concat(frames, ignore_index=True).sort_values(["patient_id", "time_s"], kind="stable", ignore_index=True)
    return df, pd.DataFrame(patients).sort_values("patient_id", ignore_index=True), counts
