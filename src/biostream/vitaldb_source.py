"""Real intraoperative recordings from VitalDB: case selection, download, caching, mapping and cleaning.

Sources, looked up in the order `params.yaml: ingest_vitaldb.sources` gives:

* ``local``: a folder of ``.vital`` files (Vital Recorder exports, or VitalDB files copied by hand);
  the case id is the file name without ``.vital``.
* ``api``: the VitalDB open dataset. Cases are listed explicitly or selected by a query over VitalDB's
  case table (``/cases``: duration, anaesthesia type) and track table (``/trks``: which tracks a case
  has). Each case's ``.vital`` file is downloaded from ``{api_url}/{dataset_version}/{caseid}.vital``
  (the path `vitaldb.load_case` reads) with a timeout, retries with backoff and bounded parallelism,
  verified, and parsed with `vitaldb.VitalFile`.
* the cache: every downloaded case is stored as Parquet, keyed by case id, track set and interval,
  written atomically, so a rerun never downloads twice and an interrupted run leaves nothing that
  counts as cached. When the API cannot be reached, cached cases are used.

Each case is resampled to the interval, its device tracks mapped onto canonical signals
(`configs/signals.yaml`), and physiologically impossible values set to missing, counted per reason.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import socket
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from biostream.config import ConfigError, SignalCatalog, require
from biostream.io import atomic_path, write_parquet

log = logging.getLogger("biostream.vitaldb")

SOURCES = ("local", "api")
CLEAN_REASONS = ("below_valid", "above_valid", "dbp_not_below_sbp")
T = TypeVar("T")


class VitalFileError(RuntimeError):
    """A .vital file cannot be read: truncated, corrupt, or not a .vital file."""


class SourceUnavailable(RuntimeError):
    """A data source cannot be reached or has nothing to give."""


class DownloadError(RuntimeError):
    """A download failed for good (after retries, or with a non-retryable error)."""


# --------------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryParams:
    required_signals: tuple[str, ...]
    min_duration_h: float
    anesthesia_types: tuple[str, ...]
    max_cases: int


@dataclass(frozen=True)
class IngestParams:
    """`params.yaml: ingest_vitaldb`."""

    sources: tuple[str, ...]
    local_dir: Path
    case_ids: tuple[int, ...]
    query: QueryParams
    api_url: str
    dataset_version: str
    cache_dir: Path
    interval_s: int
    carry_forward_s: int
    workers: int
    timeout_s: float
    retries: int
    backoff_s: float
    require_data: bool

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> IngestParams:
        w = "params.yaml: ingest_vitaldb"
        sec = require(params, "ingest_vitaldb", "params.yaml")
        q = require(sec, "query", w)
        out = cls(
            sources=tuple(require(sec, "sources", w)),
            local_dir=Path(require(sec, "local_dir", w)),
            case_ids=tuple(int(c) for c in (require(sec, "case_ids", w) or [])),
            query=QueryParams(
                required_signals=tuple(require(q, "required_signals", f"{w}.query")),
                min_duration_h=float(require(q, "min_duration_h", f"{w}.query")),
                anesthesia_types=tuple(require(q, "anesthesia_types", f"{w}.query") or []),
                max_cases=int(require(q, "max_cases", f"{w}.query")),
            ),
            api_url=str(require(sec, "api_url", w)).rstrip("/"),
            dataset_version=str(require(sec, "dataset_version", w)),
            cache_dir=Path(require(sec, "cache_dir", w)),
            interval_s=int(require(sec, "interval_s", w)),
            carry_forward_s=int(require(sec, "carry_forward_s", w)),
            workers=int(require(sec, "workers", w)),
            timeout_s=float(require(sec, "timeout_s", w)),
            retries=int(require(sec, "retries", w)),
            backoff_s=float(require(sec, "backoff_s", w)),
            require_data=bool(require(sec, "require_data", w)),
        )
        unknown = [s for s in out.sources if s not in SOURCES]
        if unknown:
            raise ConfigError(f"{w}.sources: unknown {unknown}; choose from {list(SOURCES)}")
        if out.interval_s < 1:
            raise ConfigError(f"{w}.interval_s: must be a whole number of seconds >= 1, got {out.interval_s}")
        if out.workers < 1 or out.retries < 0 or out.timeout_s <= 0:
            raise ConfigError(f"{w}: workers >= 1, retries >= 0 and timeout_s > 0 are required")
        return out


# --------------------------------------------------------------------------------------------------
# Reading .vital files
# --------------------------------------------------------------------------------------------------


def check_vital_file(path: Path) -> None:
    """Raise VitalFileError unless `path` is a complete gzip stream that starts like a .vital file.

    `vitaldb.VitalFile` reads a truncated file without complaint (it stops at the end of the data and
    returns what it got), so completeness is checked here first.
    """
    try:
        with gzip.open(path, "rb") as fh:
            if fh.read(4) != b"VITA":
                raise VitalFileError(
                    f"{path}: not a .vital file (no VITA signature); export it again with Vital Recorder"
                )
            while fh.read(1 << 20):
                pass
    except VitalFileError:
        raise
    except (EOFError, OSError, zlib.error) as exc:
        raise VitalFileError(
            f"{path}: truncated or corrupt .vital file ({exc}); the case is skipped - "
            "download or export it again"
        ) from exc


def read_vital(path: Path, tracks: Sequence[str], interval_s: int) -> pd.DataFrame:
    """The requested numeric tracks of a .vital file on a regular grid (columns: track names present)."""
    import vitaldb  # imported here: a large module, needed only by ingestion

    check_vital_file(path)
    try:
        vf = vitaldb.VitalFile(str(path), list(tracks))
    except Exception as exc:  # the parser raises assorted errors on malformed content
        raise VitalFileError(f"{path}: cannot parse .vital file ({type(exc).__name__}: {exc})") from exc
    present = [t for t in tracks if t in vf.trks and vf.trks[t].type == 2]
    if vf.dtend <= vf.dtstart:
        return pd.DataFrame({t: pd.Series(dtype=np.float32) for t in present})
    raw = vf.to_pandas(present, interval_s) if present else pd.DataFrame()
    return raw.astype(np.float32)


def tracks_key(tracks: Iterable[str], interval_s: int) -> str:
    digest = hashlib.sha1("\n".join(sorted(set(tracks))).encode()).hexdigest()[:12]
    return f"{digest}-{interval_s}s"


# --------------------------------------------------------------------------------------------------
# Mapping onto canonical signals, and cleaning
# --------------------------------------------------------------------------------------------------


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
    raw: pd.DataFrame, catalog: SignalCatalog, interval_s: int, carry_forward_s: int
) -> tuple[pd.DataFrame, CleanCounts]:
    """Map device tracks onto canonical signals and clean them.

    Per signal: each alias track is cleaned to the signal's valid range, carried forward over short
    gaps (`carry_forward_s`, monitors report numerics every 1-2 s; `hold_s` for intermittent cuff
    readings), then the aliases are merged in priority order. Finally, rows whose diastolic pressure is
    not below the systolic lose all three pressures.
    """
    counts = CleanCounts()
    n = len(raw)
    out: dict[str, np.ndarray] = {}
    for spec in catalog.signals:
        merged = np.full(n, np.nan, dtype=np.float32)
        lo, hi = spec.valid
        for alias in spec.tracks:
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


# --------------------------------------------------------------------------------------------------
# HTTP with timeouts and retries
# --------------------------------------------------------------------------------------------------


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429
    if isinstance(exc, urllib.error.URLError):
        return not isinstance(exc.reason, socket.gaierror)  # an unknown host will not resolve on retry
    return isinstance(exc, TimeoutError | ConnectionError | http.client.HTTPException | DownloadError)


def with_retries(fn: Callable[[], T], what: str, retries: int, backoff_s: float) -> T:
    """Call `fn`; on a transient error retry up to `retries` times, sleeping backoff_s * 2**attempt."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:  # classified below
            if attempt == retries or not _retryable(exc):
                raise DownloadError(f"{what}: {type(exc).__name__}: {exc}") from exc
            delay = backoff_s * 2**attempt
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, exc, attempt + 1, retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def download(url: str, dest: Path, timeout_s: float, retries: int, backoff_s: float) -> None:
    """Download `url` to `dest` atomically: `dest` exists only if the whole body arrived."""

    def attempt() -> None:
        with atomic_path(dest) as tmp, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            expected = resp.headers.get("Content-Length")
            size = 0
            with tmp.open("wb") as fh:
                while chunk := resp.read(1 << 16):
                    fh.write(chunk)
                    size += len(chunk)
            if expected is not None and size != int(expected):
                raise DownloadError(f"got {size} of {expected} bytes")

    with_retries(attempt, f"GET {url}", retries, backoff_s)


def fetch_table(url: str, dest: Path, p: IngestParams) -> pd.DataFrame:
    """A VitalDB index table (CSV), downloaded once into the cache folder."""
    if not dest.is_file():
        try:
            download(url, dest, p.timeout_s, p.retries, p.backoff_s)
        except DownloadError as exc:
            raise SourceUnavailable(f"VitalDB API unreachable ({exc})") from exc
    raw = dest.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return pd.read_csv(io.BytesIO(raw))


# --------------------------------------------------------------------------------------------------
# Case selection
# --------------------------------------------------------------------------------------------------


def select_cases(
    cases: pd.DataFrame, trks: pd.DataFrame, query: QueryParams, catalog: SignalCatalog
) -> list[int]:
    """Case ids that have a track for every required signal, last long enough and had an allowed
    anaesthesia type; the first `max_cases` by case id."""
    for col in ("caseid", "casestart", "caseend", "ane_type"):
        if col not in cases.columns:
            raise SourceUnavailable(f"VitalDB case table lacks column '{col}'")
    keep = (cases["caseend"] - cases["casestart"]) / 3600.0 >= query.min_duration_h
    if query.anesthesia_types:
        keep &= cases["ane_type"].isin(query.anesthesia_types)
    ids = set(cases.loc[keep, "caseid"].astype(int))
    for signal in query.required_signals:
        names = {a.track for a in catalog[signal].tracks}
        ids &= set(trks.loc[trks["tname"].isin(names), "caseid"].astype(int))
    return sorted(ids)[: query.max_cases]


# --------------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------------


class CaseCache:
    """Parquet files `case-<id>__<tracks-key>.parquet`: the raw resampled tracks of one case."""

    def __init__(self, root: Path, tracks: Sequence[str], interval_s: int) -> None:
        self.root = root
        self.key = tracks_key(tracks, interval_s)

    def path(self, case_id: int) -> Path:
        return self.root / f"case-{case_id}__{self.key}.parquet"

    def get(self, case_id: int) -> pd.DataFrame | None:
        path = self.path(case_id)
        return pq.read_table(path).to_pandas() if path.is_file() else None

    def put(self, case_id: int, raw: pd.DataFrame) -> None:
        write_parquet(pa.Table.from_pandas(raw, preserve_index=False), self.path(case_id))

    def cached_ids(self) -> list[int]:
        suffix = f"__{self.key}.parquet"
        return sorted(
            int(p.name[len("case-") : -len(suffix)]) for p in self.root.glob(f"case-*{suffix}")
        )

    def remove_partials(self) -> int:
        """Delete temporary files an interrupted run left behind; they never count as cached."""
        stale = list(self.root.glob(".*.tmp")) if self.root.is_dir() else []
        for p in stale:
            p.unlink()
        return len(stale)


# --------------------------------------------------------------------------------------------------
# Ingestion
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    patient_id: str
    source: str  # vitaldb-local | vitaldb-api | vitaldb-cache
    raw: pd.DataFrame


@dataclass
class IngestResult:
    cases: list[Case] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _local_cases(p: IngestParams, tracks: Sequence[str], result: IngestResult) -> None:
    if not p.local_dir.is_dir():
        result.notes.append(f"local: folder {p.local_dir} does not exist")
        return
    files = sorted(p.local_dir.glob("*.vital"))
    if not files:
        result.notes.append(f"local: no .vital files in {p.local_dir}")
    for path in files:
        try:
            raw = read_vital(path, tracks, p.interval_s)
        except VitalFileError as exc:
            log.error("%s", exc)
            result.failures.append({"case": path.stem, "source": "local", "error": str(exc)})
            continue
        result.cases.append(Case(f"vitaldb-{path.stem}", "vitaldb-local", raw))


def _api_case(case_id: int, p: IngestParams, tracks: Sequence[str], cache: CaseCache) -> Case:
    cached = cache.get(case_id)
    if cached is not None:
        return Case(f"vitaldb-{case_id}", "vitaldb-cache", cached)
    url = f"{p.api_url}/{p.dataset_version}/{case_id}.vital"
    dest = p.cache_dir / "downloads" / f"{case_id}.vital"
    try:
        download(url, dest, p.timeout_s, p.retries, p.backoff_s)
        raw = read_vital(dest, tracks, p.interval_s)
    finally:
        dest.unlink(missing_ok=True)
    cache.put(case_id, raw)
    return Case(f"vitaldb-{case_id}", "vitaldb-api", raw)


def _api_cases(
    p: IngestParams, catalog: SignalCatalog, tracks: Sequence[str], result: IngestResult,
    progress: Callable[[Iterable[Any], int], Iterable[Any]],
) -> None:
    cache = CaseCache(p.cache_dir, tracks, p.interval_s)
    removed = cache.remove_partials()
    if removed:
        log.warning("removed %d partial files an interrupted run left in %s", removed, p.cache_dir)
    if p.case_ids:
        ids = list(dict.fromkeys(p.case_ids))
    else:
        tables = p.cache_dir / "tables" / hashlib.sha1(p.api_url.encode()).hexdigest()[:10]
        try:
            cases = fetch_table(f"{p.api_url}/cases", tables / "cases.csv", p)
            trks = fetch_table(f"{p.api_url}/trks", tables / "trks.csv", p)
            ids = select_cases(cases, trks, p.query, catalog)
            log.info("query selected %d VitalDB cases", len(ids))
        except SourceUnavailable as exc:
            ids = cache.cached_ids()[: p.query.max_cases]
            result.notes.append(f"api: {exc}; using {len(ids)} cached cases")
            if not ids:
                return
    with ThreadPoolExecutor(max_workers=p.workers) as pool:
        futures = {pool.submit(_api_case, cid, p, tracks, cache): cid for cid in ids}
        done: dict[int, Case] = {}
        for fut in progress(as_completed(futures), len(futures)):
            cid = futures[fut]
            try:
                done[cid] = fut.result()
            except (DownloadError, VitalFileError, OSError) as exc:
                log.error("case %s: %s", cid, exc)
                result.failures.append({"case": str(cid), "source": "api", "error": str(exc)})
    result.cases.extend(done[cid] for cid in ids if cid in done)  # in case-id order, not arrival order


def ingest(
    p: IngestParams,
    catalog: SignalCatalog,
    progress: Callable[[Iterable[Any], int], Iterable[Any]] = lambda it, n: it,
) -> IngestResult:
    """Collect raw cases from the configured sources (a case found twice is kept from the first source)."""
    tracks = catalog.all_tracks()
    result = IngestResult()
    for source in p.sources:
        if source == "local":
            _local_cases(p, tracks, result)
        elif source == "api":
            _api_cases(p, catalog, tracks, result, progress)
    seen: set[str] = set()
    unique = []
    for case in result.cases:
        if case.patient_id not in seen:
            seen.add(case.patient_id)
            unique.append(case)
    result.cases = unique
    return result


def canonical_frame(
    cases: Sequence[Case], catalog: SignalCatalog, interval_s: int, carry_forward_s: int
) -> tuple[pd.DataFrame, pd.DataFrame, CleanCounts]:
    """The per-second signals of all cases (sorted by patient and time) and their patients table."""
    frames, patients = [], []
    counts = CleanCounts()
    for case in cases:
        sig, c = to_canonical(case.raw, catalog, interval_s, carry_forward_s)
        counts.merge(c)
        n = len(sig)
        if n == 0:
            continue
        sig.insert(0, "time_s", (np.arange(n) * interval_s).astype(np.int32))
        sig.insert(0, "patient_id", case.patient_id)
        frames.append(sig)
        has_art = any(
            a.track in case.raw.columns and a.hold_s == 0 and case.raw[a.track].notna().any()
            for a in catalog["map"].tracks
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


def write_vital_file(
    recording: pd.DataFrame, path: Path, track_of: Mapping[str, str], start_epoch_s: float, interval_s: int = 1
) -> None:
    """Write canonical signals as a .vital file with `vitaldb` (one numeric track per signal, named by
    `track_of`, e.g. {"hr": "Solar8000/HR"}); missing values are left out, as a monitor records them.
    Useful to look at synthetic patients in Vital Recorder and to test the loader on a round trip."""
    import vitaldb

    vf = vitaldb.VitalFile()
    n = len(recording)
    times = start_epoch_s + np.arange(n) * interval_s
    for signal, track in track_of.items():
        values = recording[signal].to_numpy(dtype=np.float64)
        ok = ~np.isnan(values)
        recs = [{"dt": float(t), "val": float(v)} for t, v in zip(times[ok], values[ok], strict=True)]
        vf.add_track(track, recs, srate=0)
    vf.dtstart = float(start_epoch_s)
    vf.dtend = float(start_epoch_s + n * interval_s)
    with atomic_path(path) as tmp:
        vf.to_vital(str(tmp))
