"""What one batch of a stream writes, in one transaction: each bed's new state (its JSON), the seconds, the late
values merged, the episodes touched, and the conditions "no valid data" ended; the answers' episodes in their final
form (`answers.episode_answer`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from biostream.serving.streaming.answers import episode_answer, episode_record
from biostream.serving.streaming.batch import Plan, Windows

if TYPE_CHECKING:
    from biostream.serving.streaming.engine import BedState


def batch_writes(plans: list[Plan], windows: Windows, seconds: list[list], now: float,
                 model_version: str | None) -> Writes:
    """What the batch writes: the beds' new states, the seconds, the merged late values and the episodes touched;
    the answers' episodes in their final form."""
    bed_rows, merged, episodes, ended = [], [], [], []
    for plan in plans:
        st = plan.state
        if st.refused_since is not None and plan.segments[-1].last_row is not None:  # valid data again
            ended.append((int(now), now, plan.bed, st.refused_since))
            st.refused_since = None
        for t, col in plan.merged.items():
            merged.append({"bed": plan.bed, "second": t, "vals": np.ascontiguousarray(col).tobytes()})
            plan.answer.merged += 1
        if plan.touched:
            episodes.extend(episode_record(plan.bed, ep, now, model_version) for ep in plan.touched.values())
        if plan.answer.opened:
            plan.answer.opened = [episode_answer(episode_record(plan.bed, e, now, model_version))
                                  for e in plan.answer.opened]
        if plan.answer.closed:
            plan.answer.closed = [episode_answer(episode_record(plan.bed, e, now, model_version))
                                  for e in plan.answer.closed]
        seg = plan.segments[-1]  # its last W seconds: its newest second's window, or (none new) its history
        st.values = seg.hist if seg.last_row is None else windows.newest_windows.pop(seg.last_row)
        st.last_second, st.first_second = plan.last_second, plan.first_second
        bed_rows.append({"bed": plan.bed, "last_second": st.last_second, "last_arrival": now,
                         "state": state_json(st), "refused_since": st.refused_since})
    return Writes(bed_rows, seconds, merged, episodes, ended)


def state_json(st: BedState) -> str:
    """The bed's state as the store keeps it (JSON); written for every bed of every batch, so the usual
    case, no open episode, is formatted by hand (json.dumps: ~6 us a bed)."""
    alarms, advisories = st.alarms, st.advisories
    if alarms.episode is None and all(a.episode is None for a in advisories.values()):
        first = "null" if st.first_second is None else str(int(st.first_second))
        quiet = ", ".join(f'"{k}": {{"recent": [{", ".join(map(str, a.recent))}], "episode": null}}'
                          for k, a in advisories.items())
        return (f'{{"first_second": {first}, "alarms": {{"recent": [{", ".join(map(str, alarms.recent))}], '
                f'"episode": null}}, "advisories": {{{quiet}}}}}')
    return json.dumps({"first_second": st.first_second, "alarms": alarms.to_dict(),
                       "advisories": {k: a.to_dict() for k, a in advisories.items()}})


class Writes(NamedTuple):
    """What one batch writes, in one transaction (the store transaction's `write`, in this order)."""

    beds: list[dict]
    seconds: list[list]
    merged: list[dict]
    episodes: list[dict]
    ended: list[tuple] = []  # conditions "no valid data" ended: (end second, wall clock, bed, start)
