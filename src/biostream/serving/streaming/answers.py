"""What bedside streams read and answer: a bed's seconds from a message (`Chunk`), what was refused in it
(`Problem`), what a batch answered per bed (`BedAnswer`), and an episode as the store keeps it and as the
service answers it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np

from biostream.serving.streaming.policy import Episode, Peak


@dataclass
class Chunk:
    """One bed's consecutive seconds from a message: (S, m) values (NaN = missing) from second `start`."""

    bed: str
    start: int
    values: np.ndarray
    index: int = 0  # its place in the message (for errors)


@dataclass
class Problem:
    """What was refused or changed in a message: named so that the sender can fix it."""

    index: int | None
    bed: str | None
    field: str
    value: Any
    limit: str
    error: str
    kept: str  # what happened to the rest: "nothing of this item", "stored as missing", ...
    refused: bool = False  # values of the bed were not stored (not merely stored as missing)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


MAX_PROBLEMS = 100  # problems an answer lists one by one; the rest are counted (a bad message's answer stays small)


class Problems(list):
    """What a message refused or changed: the first `MAX_PROBLEMS` listed, every one counted (`total`), and each
    bed whose values were refused with its first reason (`refused_beds`), however many there were."""

    def __init__(self, problems: Iterable[Problem] = ()) -> None:
        super().__init__()
        self.total = 0
        self.refused_beds: dict[str, str] = {}
        self.extend(problems)

    def append(self, problem: Problem) -> None:
        self.total += 1
        if problem.refused and problem.bed is not None and problem.bed not in self.refused_beds:
            self.refused_beds[problem.bed] = problem.error
        if len(self) < MAX_PROBLEMS:
            super().append(problem)

    def extend(self, problems: Iterable[Problem]) -> None:
        if isinstance(problems, Problems):  # counted and refused beds carried over, not only those listed
            for p in problems:
                self.append(p)
            self.total += problems.total - len(problems)
            for bed, why in problems.refused_beds.items():
                self.refused_beds.setdefault(bed, why)
            return
        for p in problems:
            self.append(p)

    def __iadd__(self, problems: Iterable[Problem]) -> Problems:  # type: ignore[override]
        self.extend(problems)
        return self

    def to_list(self) -> list[dict[str, Any]]:
        return [p.to_dict() for p in self]


@dataclass
class BedAnswer:
    bed: str
    seconds: list[dict[str, Any]] = field(default_factory=list)  # time, score, alarm, alarm_class, top_signals
    opened: list[dict[str, Any]] = field(default_factory=list)
    closed: list[dict[str, Any]] = field(default_factory=list)
    repeated: int = 0
    merged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Outgoing:
    """A batch's result message (the Redis path's `<prefix>:out`), kept in the store's outbox by the batch's own
    commit, so that it is published even when the process dies right after that commit: `render` makes it from
    the batch's answers and refusals; the engine sets `message` and `id` (its outbox row) as it commits."""

    render: Callable[[list[BedAnswer], list[Problem]], str]
    published: list[int] = field(default_factory=list)  # outbox ids published since: the same commit deletes them
    message: str | None = None
    id: int | None = None


@lru_cache(maxsize=8192)  # a batch's beds mostly answer the same few seconds
def iso(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).isoformat().replace("+00:00", "Z")


def episode_row(bed: str, start: int, end: int | None, last_on: int, alarm_class: str, now: float,
                model_version: str | None, *, peak: Peak | None = None, signals: list[str] | None = None,
                reason: str | None = None, kind: str = "") -> dict[str, Any]:
    """An episode as the store keeps it (every writer's one form): an alarm, a technical condition (`reason`: its
    words), or an advisory (`kind`: the rule kind it warns of; `reason`: what turned it on)."""
    return {"bed": bed, "start": start, "kind": kind, "end": end, "last_on": last_on, "alarm_class": alarm_class,
            "peak_second": None if peak is None else peak.second, "peak_score": None if peak is None else peak.score,
            "signals": json.dumps(signals), "opened_at": now, "closed_at": now if end is not None else None,
            "model_version": model_version, "reason": reason}


def episode_record(bed: str, ep: Episode, now: float, model_version: str | None = None) -> dict[str, Any]:
    """A stream's episode as the store keeps it; `model_version`: the registered version of the model scoring it."""
    peak = ep.peak
    signals = ep.signals if ep.kind else None if peak is None else peak.signals
    return episode_row(bed, ep.start, ep.end, ep.last_on, ep.alarm_class, now, model_version, peak=peak,
                       signals=signals, reason=ep.reason, kind=ep.kind or "")


def episode_answer(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored episode as the service answers it."""
    end = rec["end"]
    return {"bed": rec["bed"], "start": iso(rec["start"]), "end": None if end is None else iso(end),
            "open": end is None, "alarm_class": rec["alarm_class"], "kind": rec.get("kind") or None,
            "peak_time": None if rec["peak_second"] is None else iso(rec["peak_second"]),
            "peak_score": rec["peak_score"], "signals": json.loads(rec["signals"] or "null") or [],
            "acknowledged_at": None if rec.get("acked_at") is None else iso(int(rec["acked_at"])),
            "acknowledged_by": rec.get("acked_by"), "model_version": rec.get("model_version"),
            "reason": rec.get("reason"),
            "realarmed_at": None if rec.get("realarmed_at") is None else iso(int(rec["realarmed_at"])),
            "realarm_why": rec.get("realarm_why")}
