"""`params.yaml: ingest_vitaldb`: where VitalDB cases come from and how they are fetched and resampled."""

from __future__ import annotations

from biostream.core.params import IngestParams, QueryParams  # noqa: F401 (params.yaml: its section)

SOURCES = ("local", "api")


