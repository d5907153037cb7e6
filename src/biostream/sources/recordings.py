"""Local recordings as a data source: a folder of CSV or Parquet files, one per case, the format a hospital's monitor
export or another dataset is most easily brought into (docs/data.md#your-own-recordings).

A file holds one recording: a time column or one row per second, and a column per signal named by its canonical key
or by a device track of `configs/signals.yaml`, mapped and cleaned as VitalDB's tracks are
(`biostream.sources.canonical`); `read_recording` says how it is read. The same reader serves two datasets
(`SOURCES`): `recordings` (your own, `params.yaml: ingest_recordings`) and `real` (the project's real reference
recordings, `params.yaml: ingest_real`). A file that cannot be used gets a `RecordingError` naming the file, row and
column; that case is skipped and reported, the others are kept.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from biostream.core.config import SignalCatalog
from biostream.core.params import RecordingsParams  # noqa: F401 (params.yaml: its section)
from biostream.sources.canonical import Case

log = logging.getLogger("biostream.recordings")

SUFFIXES = (".csv", ".parquet")
TIME_COLUMNS = ("time", "timestamp", "datetime", "time_s")
MISSING_TOKENS = frozenset({"", "-", "--", "---", "nan", "NaN", "NA", "N/A", "null", "None"})
SOURCES = {"recordings": "rec", "real": "real"}  # dataset -> case id prefix (ids stay distinct across datasets)
_UNIT = re.compile(r"\s*\[[^\]]*\]\s*$")  # a unit in brackets after a column's name: `HR[bpm]`, `Time [s]`


class RecordingError(ValueError):
    """A recording file that cannot be used as it is: the message names the file, row and column, and the fix."""


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


def column_name(name: str) -> str:
    """A column's name as matched: stripped of spaces and of a unit in brackets after it, lower case."""
    return _UNIT.sub("", str(name).strip()).lower()


def row_spacing(seconds: np.ndarray) -> int:
    """The seconds between a file's rows when they are regular (most gaps between consecutive rows are this long: a
    chart's one row a minute); 1 otherwise (a 1-Hz export, with its gaps)."""
    steps = np.diff(np.asarray(seconds, dtype=np.int64))
    if not len(steps):
        return 1
    counts = np.bincount(steps[steps > 0])
    if not len(counts):
        return 1
    usual = int(counts.argmax())
    return usual if counts[usual] * 2 >= len(steps) else 1


def read_recording(path: str | Path, catalog: SignalCatalog, params: RecordingsParams,
                   section: str = "ingest_recordings") -> tuple[pd.DataFrame, list[str]]:
    """One recording file as a 1-Hz frame of its signal columns (canonical keys and device tracks, as
    `configs/signals.yaml` spells them), and the columns it ignored. Raises `RecordingError`.

    Times: the column `params.time_column`, or the first of `TIME_COLUMNS` present (ISO 8601 times, or seconds,
    relative or since the epoch), else one row per second; put on a 1-s grid (a second with several rows keeps the
    last; a second with none is missing). Rows further apart than a second (a chart's one row a minute:
    `row_spacing`) have their values held until the next row, at most that spacing, as a monitor holds a reading.
    Names match whatever their case, and with a unit in brackets after them (`HR[bpm]`, `Time [s]`); empty cells
    and a monitor's dashes are missing."""
    path = Path(path)
    raw = _load(path)
    raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise RecordingError(f"{path}: no rows; a recording holds one row per second (or a time column)")
    known = {column_name(n): n for n in (*catalog.keys, *catalog.all_tracks())}
    named: dict[str, str] = {}  # file column -> the catalog's name
    for c in raw.columns:
        if column_name(c) in known:
            twin = next((o for o, n in named.items() if n == known[column_name(c)]), None)
            if twin is not None:
                raise RecordingError(f"{path}: columns '{twin}' and '{c}' both name {known[column_name(c)]}; "
                                     "keep one of them")
            named[c] = known[column_name(c)]
    if params.time_column:
        if params.time_column not in raw.columns:
            raise RecordingError(f"{path}: no column '{params.time_column}' ({section}.time_column); columns: "
                                 f"{', '.join(raw.columns)}")
        time_col: str | None = params.time_column
    else:
        time_col = next((c for t in TIME_COLUMNS for c in raw.columns if column_name(c) == t), None)
    signals = [c for c in named if c != time_col]
    ignored = [c for c in raw.columns if c not in named and c != time_col]
    if not signals:
        raise RecordingError(f"{path}: no column names a signal; name them by the signal ({', '.join(catalog.keys)}) "
                             "or by a device track of configs/signals.yaml (e.g. Solar8000/HR)")
    values = {named[c]: _numbers(path, c, raw[c]) for c in signals}
    seconds = _seconds(path, time_col, raw[time_col]) if time_col else np.arange(len(raw), dtype=np.float64)
    grid = np.floor(seconds).astype(np.int64)
    length = int(grid.max()) + 1
    if length > params.max_hours * 3600:
        raise RecordingError(f"{path}: spans {length / 3600:.1f} h, more than {section}.max_hours "
                             f"({params.max_hours:g} h); check the time column's unit (seconds) or split the file")
    frame = pd.DataFrame(values)
    frame.insert(0, "_second", grid)
    frame = frame.sort_values("_second", kind="stable").drop_duplicates("_second", keep="last")
    out = frame.set_index("_second").reindex(np.arange(length)).reset_index(drop=True)
    spacing = row_spacing(frame["_second"].to_numpy())
    if spacing > 1:  # one row every `spacing` seconds (a chart's minute rows): each row holds until the next
        out = out.ffill(limit=spacing - 1)
    return out.astype(np.float32), ignored


def ingest_recordings(params: RecordingsParams, catalog: SignalCatalog,
                      progress: Callable[[Iterable[Any], int], Iterable[Any]] = lambda it, n: it,
                      source: str = "recordings") -> RecordingsResult:
    """Every recording of the folder and its sub-folders (sorted by path; case id `<prefix>-<file name>`, the
    prefix by `SOURCES`); a file that cannot be used is skipped and listed under `failures` with its error."""
    if source not in SOURCES:
        raise ValueError(f"unknown recordings dataset '{source}'; expected one of {', '.join(SOURCES)}")
    result = RecordingsResult()
    if not params.folder.is_dir():
        result.notes.append(f"folder {params.folder} does not exist")
        return result
    files = sorted(p for p in params.folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(params.folder).parts))
    if not files:
        result.notes.append(f"no .csv or .parquet files in {params.folder}")
    stems = [p.stem for p in files]
    for path in progress(files, len(files)):
        name = str(path.relative_to(params.folder))
        if stems.count(path.stem) > 1:
            msg = (f"{path}: another file in {params.folder} has the name {path.stem}: case ids come from file "
                   "names; rename one of them")
            log.error("%s", msg)
            result.failures.append({"case": name, "source": source, "error": msg})
            continue
        try:
            raw, ignored = read_recording(path, catalog, params, f"ingest_{source}")
        except RecordingError as exc:
            log.error("%s", exc)
            result.failures.append({"case": name, "source": source, "error": str(exc)})
            continue
        if ignored:
            result.ignored_columns[name] = ignored
        result.cases.append(Case(f"{SOURCES[source]}-{path.stem}", source, raw))
    return result
