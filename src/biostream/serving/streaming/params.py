"""`params.yaml: stream`: the bedside-stream settings the service carries (in its serving spec)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from biostream.core.config import ConfigError, require
from biostream.serving.database.retention import Retention

STORE_ENV = "BIOSTREAM_STREAM_STORE"  # overrides stream.store where the service runs (a PostgreSQL URL, ...)
REDIS_ENV = "BIOSTREAM_REDIS_URL"  # overrides stream.redis_url


@dataclass(frozen=True)
class StreamParams:
    """`params.yaml: stream`."""

    store: str  # SQLAlchemy URL of the stream store
    late_s: int  # a late sample within this many seconds of a bed's newest second is merged; older is refused
    silent_s: int  # a bed without a message for this long is closed; a gap this long starts a new recording
    max_message_s: int  # seconds per bed in one message
    max_message_beds: int  # items (bed x stretch of seconds) in one message
    redis_url: str | None  # the scale path's Redis (biostream.serving.streaming.redis_path); None: in-process only
    shards: int  # Redis input streams (a bed's messages go to one, by its id); one consumer owns a shard at a time
    retention: Retention = Retention()  # how long seconds, episodes and audit entries are kept

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> StreamParams:
        w = "params.yaml: stream"
        sec = require(params, "stream", "params.yaml")
        out = cls(str(require(sec, "store", w)), int(require(sec, "late_s", w)), int(require(sec, "silent_s", w)),
                  int(require(sec, "max_message_s", w)), int(require(sec, "max_message_beds", w)),
                  sec.get("redis_url") or None, int(require(sec, "shards", w)),
                  Retention.from_mapping(sec.get("retention"), f"{w}.retention"))
        if min(out.silent_s, out.max_message_s, out.max_message_beds, out.shards) < 1 or out.late_s < 0:
            raise ConfigError(f"{w}: silent_s, max_message_s, max_message_beds and shards must be >= 1, late_s >= 0")
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StreamParams:
        return cls(**{**d, "retention": Retention(**d.get("retention", {}))})

    def with_environment(self) -> StreamParams:
        """These params with the store and Redis URLs the environment sets (`BIOSTREAM_STREAM_STORE`,
        `BIOSTREAM_REDIS_URL`): where a service or consumer runs decides where it writes."""
        return replace(self, store=os.environ.get(STORE_ENV) or self.store,
                       redis_url=os.environ.get(REDIS_ENV) or self.redis_url)
