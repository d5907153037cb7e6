"""Real intraoperative recordings from VitalDB: case selection, download, caching, mapping and cleaning.

Sources are looked up in the order `params.yaml: ingest_vitaldb.sources` gives: ``local``, a folder of ``.vital``
files (case id = file name), and ``api``, the VitalDB open dataset, each case downloaded once into a Parquet cache
that serves it when the API cannot be reached (docs/data.md). Each case is resampled, its tracks mapped onto
canonical signals (`biostream.sources.canonical`), and impossible values set to missing, counted per reason.

* `params`: `IngestParams`; `files`: `.vital` files; `api`: the API, downloads and the cache;
  `ingest`: collecting the cases of every source.
"""

from biostream.sources.canonical import CLEAN_REASONS, Case, CleanCounts, canonical_frame, to_canonical
from biostream.sources.vitaldb.api import (
    CaseCache,
    DownloadError,
    SourceUnavailable,
    download,
    fetch_table,
    select_cases,
    tracks_key,
    with_retries,
)
from biostream.sources.vitaldb.files import VitalFileError, check_vital_file, read_vital, write_vital_file
from biostream.sources.vitaldb.ingest import IngestResult, ingest
from biostream.sources.vitaldb.params import SOURCES, IngestParams, QueryParams

__all__ = [
    "CLEAN_REASONS", "SOURCES", "Case", "CaseCache", "CleanCounts", "DownloadError", "IngestParams", "IngestResult",
    "QueryParams", "SourceUnavailable", "VitalFileError", "canonical_frame", "check_vital_file", "download",
    "fetch_table", "ingest", "read_vital", "select_cases", "to_canonical", "tracks_key", "with_retries",
    "write_vital_file",
]
