"""`params.yaml: ingest_vitaldb`: where VitalDB cases come from and how they are fetched and resampled."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError, require

SOURCES = ("local", "api")


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
