"""The alarm policy of `biostream.models.alarms`, one second at a time: what a bed's stream decides as each
second is scored, with the same answer as `class_alarms` and `alarm_episodes` on the whole recording.

`BedAlarms.step` takes one scored second. The state is a few numbers per bed (`to_dict`/`from_dict`): it is stored
with every second the engine writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from biostream.data.schema import ADVISORY, PHYSIOLOGICAL, TECHNICAL
from biostream.models.alarms import AlarmPolicy


@dataclass
class Peak:
    second: int
    score: float
    signals: list[str] | None = None  # None until the engine names them (it has the window)


@dataclass
class Episode:
    """An alarm episode of one bed: [start, end) in seconds since the epoch; `end` None while it is open."""

    start: int
    last_on: int  # the last second the k-of-n rule was on
    above: int = 0  # seconds above threshold inside it (its class is decided by them)
    technical: int = 0  # ... of which technical
    peak: Peak | None = None
    end: int | None = None
    # seconds after `last_on`, not yet part of it: they are if the rule turns on again within the refractory period
    gap_above: int = 0
    gap_technical: int = 0
    gap_peak: Peak | None = None
    # an advisory's: the rule kind it warns of, what turned it on, the signals it reads (None for an alarm)
    kind: str | None = None
    reason: str | None = None
    signals: list[str] | None = None

    @property
    def alarm_class(self) -> str:
        if self.kind is not None:
            return ADVISORY
        return TECHNICAL if self.technical > self.above / 2 else PHYSIOLOGICAL

    def to_dict(self) -> dict[str, Any]:  # by hand: dataclasses.asdict deep-copies (stored every second)
        d = dict(self.__dict__)
        for key in ("peak", "gap_peak"):
            if d[key] is not None:
                d[key] = dict(d[key].__dict__)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        d = dict(d)
        for key in ("peak", "gap_peak"):
            d[key] = None if d[key] is None else Peak(**d[key])
        return cls(**d)


@dataclass(frozen=True)
class Step:
    """What one second did: the rule's state, and the episode it opened or closed (if any)."""

    on: bool
    opened: Episode | None = None
    closed: Episode | None = None
    peak: bool = False  # this second became the open episode's peak (or its pending gap's): name its signals


_QUIET = Step(False)  # off, no episode: nothing happened


@dataclass
class BedAlarms:
    """One bed's alarm state under `policy`. `step` says whether the k-of-n rule is on (at once where a bedside rule
    fires); an episode opens when it turns on, stays open while it is on, and closes `refractory_s` seconds after it
    was last on (an alarm that starts again within the refractory period is the same episode: the seconds between
    belong to it, as `apply_policy` merges them). Its class is that of most of its seconds above threshold
    (technical or physiological), re-decided as it grows; its peak is its highest-scoring second (the first of
    equals), whose main signals the engine fills in."""

    policy: AlarmPolicy
    recent: list[int] = field(default_factory=list)  # above threshold (0/1) over the last n seconds, oldest first
    episode: Episode | None = None

    def step(self, second: int, score: float, above: bool, technical: bool, fired: bool = False) -> Step:
        """`fired`: a bedside rule fires this second (on at once: it has held for its duration already)."""
        p, recent = self.policy, self.recent
        recent.append(int(above))
        if len(recent) > p.n:
            del recent[0]
        on = fired or sum(recent) >= p.k
        ep = self.episode
        if ep is None and not on:
            return _QUIET  # most seconds of most beds
        opened = closed = None
        peak = False
        if on:
            if ep is None:
                ep = self.episode = opened = Episode(start=second, last_on=second)
            else:  # on again (or still): the seconds since it was last on belong to the episode
                ep.above += ep.gap_above
                ep.technical += ep.gap_technical
                if ep.gap_peak is not None and (ep.peak is None or ep.gap_peak.score > ep.peak.score):
                    ep.peak = ep.gap_peak
                ep.gap_above = ep.gap_technical = 0
                ep.gap_peak = None
            ep.last_on = second
            ep.above += int(above)
            ep.technical += int(above and technical)
            if ep.peak is None or score > ep.peak.score:
                ep.peak, peak = Peak(second, score), True
        elif second - ep.last_on >= p.refractory_s:  # no later start can merge with it any more
            closed = self.close()
        else:
            ep.gap_above += int(above)
            ep.gap_technical += int(above and technical)
            best = ep.peak.score if ep.peak is not None else float("-inf")
            if ep.gap_peak is not None:
                best = max(best, ep.gap_peak.score)
            if score > best:
                ep.gap_peak, peak = Peak(second, score), True
        return Step(on, opened, closed, peak)

    def close(self) -> Episode | None:
        """End the open episode at its last on second (the stream ended, or the refractory period passed)."""
        ep, self.episode = self.episode, None
        if ep is not None:
            ep.end = ep.last_on + 1
            ep.gap_above = ep.gap_technical = 0
            ep.gap_peak = None
        return ep

    def reset(self) -> Episode | None:
        """A new recording (the bed went silent): close the episode and forget the last n seconds."""
        self.recent = []
        return self.close()

    def to_dict(self) -> dict[str, Any]:
        return {"recent": list(self.recent), "episode": None if self.episode is None else self.episode.to_dict()}

    @classmethod
    def from_dict(cls, policy: AlarmPolicy, d: dict[str, Any]) -> BedAlarms:
        return cls(policy, list(d["recent"]), None if d["episode"] is None else Episode.from_dict(d["episode"]))
