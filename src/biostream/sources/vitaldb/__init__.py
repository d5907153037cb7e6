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
(`biostream.sources.canonical`), and physiologically impossible values set to missing, counted per reason.

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
