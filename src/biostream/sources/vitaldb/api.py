"""VitalDB's API: index tables, case selection and downloads with timeouts, retries and backoff, and the
cache of downloaded cases (Parquet, written atomically)."""

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
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from biostream.core.config import SignalCatalog
from biostream.core.io import atomic_path, write_parquet
from biostream.sources.vitaldb.params import IngestParams, QueryParams

log = logging.getLogger("biostream.vitaldb")
T = TypeVar("T")


class SourceUnavailable(RuntimeError):
    """A data source cannot be reached or has nothing to give."""


class DownloadError(RuntimeError):
    """A download failed for good (after retries, or with a non-retryable error)."""


def tracks_key(tracks: Iterable[str], interval_s: int) -> str:
    digest = hashlib.sha1("\n".join(sorted(set(tracks))).encode()).hexdigest()[:12]
    return f"{digest}-{interval_s}s"


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


def select_cases(
    cases: pd.DataFrame, trks: pd.DataFrame, query: QueryParams, catalog: SignalCatalog
) -> list[int]:
    """Case ids of VitalDB's case table (`/cases`: duration, anaesthesia type) that have a track for every required
    signal (track table `/trks`), last long enough and had an allowed anaesthesia type; the first `max_cases` by
    case id."""
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


class CaseCache:
    """Parquet files `case-<id>__<tracks-key>.parquet`: the raw resampled tracks of one case, keyed by case id,
    track set and interval, written atomically: a rerun never downloads a case twice, and an interrupted one leaves
    nothing that counts as cached."""

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
