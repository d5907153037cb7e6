"""`params.yaml: ingest_vitaldb`: where VitalDB cases come from and how they are fetched and resampled."""

from __future__ import annotations

import typing

from biostream.core.params import CaseSource, IngestParams, QueryParams  # noqa: F401 (params.yaml: its section)

SOURCES: tuple[str, ...] = typing.get_args(CaseSource)  # where cases come from (params.yaml: ingest_vitaldb.sources)


