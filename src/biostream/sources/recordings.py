"""Local recordings as a data source: a folder of CSV or Parquet files, one per case, the format a hospital's monitor
export or another dataset is most easily brought into (`params.yaml: ingest_recordings`).

A file holds one recording: either a time column (`time_column`, or the first of `TIME_COLUMNS` present: ISO 8601
times, or seconds, relative or since the epoch) or one row per second; and a column per signal, named by its
canonical key (`hr`, `map`, ...) or by a device track of `configs/signals.yaml` (`Solar8000/NIBP_MBP`,
`Intellivue/HR`, ...), mapped and cleaned as VitalDB's tracks are (`biostream.sources.canonical`). Times are put
on a 1-s grid (a second with several rows keeps the last; a second with none is missing); other columns are
listed as ignored; empty cells and a monitor's dashes are missing.

A file that cannot be used gets a `RecordingError` naming the file, and where it applies the row (as a spreadsheet
counts it: the header is row 1) and the column; that case is skipped and reported, the others are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import ConfigError, SignalCatalog, require
from biostream.sources.canonical import Case

log = logging.getLogger("biostream.recordings")

SUFFIXES = (".csv", ".parquet")
TIME_COLUMNS = ("time", "timestamp", "datetime", "time_s")
MISSING_TOKENS = frozenset({"", "-", "--", "---", "nan", "NaN", "NA", "N/A", "null", "None"})
SOURCE = "recordings"


class RecordingError(ValueError):
    """A recording file that cannot be used as it is: the message names the file, row and column, and the fix."""


@dataclass(frozen=True)
class RecordingsParams:
    """`params.yaml: ingest_recordings`."""

    folder: Path
    time_column: str | None
    carry_forward_s: int
    hold_s: Mapping[str, int]
    max_hours: float
    require_data: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> RecordingsParams:
        w = "params.yaml: ingest_recordings"
        sec = require(params, "ingest_recordings", "params.yaml")
        out = cls(
            folder=Path(require(sec, "folder", w)),
            time_column=require(sec, "time_column", w),
            carry_forward_s=int(require(sec, "carry_forward_s", w)),
            hold_s={str(k): int(v) for k, v in (require(sec, "hold_s", w) or {}).items()},
            max_hours=float(require(sec, "max_hours", w)),
            require_data=bool(require(sec, "require_data", w)),
        )
        if out.carry_forward_s < 0 or out.max_hours <= 0 or any(v < 0 for v in out.hold_s.values()):
            raise ConfigError(f"{w}: carry_forward_s and hold_s must be >= 0 and max_hours > 0")
        return out


@dataclass
class RecordingsResult:
    cases: list[Case] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)


def _load(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except Exception as exc:  # the readers raise assorted errors on malformed files
        raise RecordingError(f"{path}: cannot be read as {path.suffix[1:].upper()} ({type(exc).__name__}: {exc}); "
                             "export it again as a CSV with a header row, or as Parquet") from exc


def _row(i: int) -> int:
    """A data row's number as a spreadsheet shows it (the header is row 1)."""
    return i + 2


def _numbers(path: Path, column: str, values: pd.Series) -> np.ndarray:
    """A column as float64, NaN where missing; a value that is neither a number nor a missing-value token is an
    error naming the row, the column and the value."""
    if pd.api.types.is_numeric_dtype(values):
        out = values.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        out[~np.isfinite(out)] = np.nan
        return out
    text = values.astype(str).str.strip()
    out = pd.to_numeric(text.where(~text.isin(MISSING_TOKENS)), errors="coerce").to_numpy(dtype=np.float64,
                                                                                            copy=True)
    bad = np.isnan(out) & ~text.isin(MISSING_TOKENS).to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise RecordingError(f"{path}: row {_row(i)}, column '{column}': '{text.iloc[i]}' is not a number "
                             f"({int(bad.sum())} such values); leave a missing value empty")
    out[~np.isfinite(out)] = np.nan
    return out


def _seconds(path: Path, column: str, values: pd.Series) -> np.ndarray:
    """Seconds since the recording's first row, from a time column of ISO times or numbers of seconds."""
    if pd.api.types.is_datetime64_any_dtype(values):
        times = pd.to_datetime(values, utc=True)
    elif pd.api.types.is_numeric_dtype(values):
        times = None
        seconds = values.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = values.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce")
        if numeric.notna().all():
            times, seconds = None, numeric.to_numpy(dtype=np.float64)
        else:
            times = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    if times is not None:
        bad = times.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordingError(f"{path}: row {_row(i)}, column '{column}': '{values.iloc[i]}' is not a time; "
                                 "write ISO 8601 times (2026-11-21T10:15:00Z) or seconds")
        seconds = (times - times.iloc[0]).dt.total_seconds().to_numpy()
    bad = ~np.isfinite(seconds)
    if bad.any():
        i = int(np.argmax(bad))
        raise RecordingError(f"{path}: row {_row(i)}, column '{column}': no time; every row needs one")
    return seconds - seconds.min()


def read_recording(path: str | Path, catalog: SignalCatalog,
                   params: RecordingsParams) -> tuple[pd.DataFrame, list[str]]:
    """One recording file as a 1-Hz frame of its signal columns (canonical keys and device tracks as named), and
    the columns it ignored. Raises `RecordingError`."""
    path = Path(path)
    raw = _load(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise RecordingError(f"{path}: no rows; a recording holds one row per second (or a time column)")
    names = set(catalog.keys) | set(catalog.all_tracks())
    time_col = params.time_column or next((c for c in TIME_COLUMNS if c in raw.columns), None)
    if params.time_column and params.time_column not in raw.columns:
        raise RecordingError(f"{path}: no column '{params.time_column}' (ingest_recordings.time_column); columns: "
                             f"{', '.join(raw.columns)}")
    signals = [c for c in raw.columns if c in names]
    ignored = [c for c in raw.columns if c not in names and c != time_col]
    if not signals:
        raise RecordingError(f"{path}: no column names a signal; name them by the signal ({', '.join(catalog.keys)}) "
                             "or by a device track of configs/signals.yaml (e.g. Solar8000/HR)")
    values = {c: _numbers(path, c, raw[c]) for c in signals}
    seconds = _seconds(path, time_col, raw[time_col]) if time_col else np.arange(len(raw), dtype=np.float64)
    grid = np.floor(seconds).astype(np.int64)
    length = int(grid.max()) + 1
    if length > params.max_hours * 3600:
        raise RecordingError(f"{path}: spans {length / 3600:.1f} h, more than ingest_recordings.max_hours "
                             f"({params.max_hours:g} h); check the time column's unit (seconds) or split the file")
    frame = pd.DataFrame(values)
    frame.insert(0, "_second", grid)
    frame = frame.sort_values("_second", kind="stable").drop_duplicates("_second", keep="last")
    out = frame.set_index("_second").reindex(np.arange(length)).reset_index(drop=True)
    return out.astype(np.float32), ignored


def ingest_recordings(params: RecordingsParams, catalog: SignalCatalog,
                      progress: Callable[[Iterable[Any], int], Iterable[Any]] = lambda it, n: it) -> RecordingsResult:
    """Every recording of the folder (sorted by name; case id `rec-<file name>`); a file that cannot be used is
    skipped and listed under `failures` with its error."""
    result = RecordingsResult()
    if not params.folder.is_dir():
        result.notes.append(f"folder {params.folder} does not exist")
        return result
    files = sorted(p for p in params.folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
    if not files:
        result.notes.append(f"no .csv or .parquet files in {params.folder}")
    for path in progress(files, len(files)):
        try:
            raw, ignored = read_recording(path, catalog, params)
        except RecordingError as exc:
            log.error("%s", exc)
            result.failures.append({"case": path.name, "source": SOURCE, "error": str(exc)})
            continue
        if ignored:
            result.ignored_columns[path.name] = ignored
        result.cases.append(Case(f"rec-{path.stem}", SOURCE, raw))
    return result
