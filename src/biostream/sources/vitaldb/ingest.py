"""Collecting VitalDB cases from the configured sources, in order: local `.vital` files, then the API (the
cache consulted first; cached cases used when the API cannot be reached)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from biostream.core.config import SignalCatalog
from biostream.sources.canonical import Case
from biostream.sources.vitaldb.api import (
    CaseCache,
    DownloadError,
    SourceUnavailable,
    download,
    fetch_table,
    select_cases,
)
from biostream.sources.vitaldb.files import VitalFileError, read_vital
from biostream.sources.vitaldb.params import IngestParams

log = logging.getLogger("biostream.vitaldb")


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
    """One case from the cache, else downloaded from `{api_url}/{dataset_version}/{caseid}.vital` (the path
    `vitaldb.load_case` reads), parsed and cached."""
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
    # device tracks only: vitaldb matches a bare name (PhysioNet's `RESP`) to any device's track of that name
    tracks = tuple(t for t in catalog.all_tracks() if "/" in t)
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
