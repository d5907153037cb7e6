"""One alarm step, two callers: the state machine a bed's stream steps second by second
(`biostream.serving.streaming.policy.BedAlarms`) gives the alarms the batch policy gives a whole recording
(`biostream.models.alarms.class_alarms`, `alarm_episodes`), on random sequences: any k of n and refractory period,
technical seconds, bedside rules that fire, new recordings (a reset), and a process restarting mid-stream (the state
through its stored JSON). The advisory tier is stepped with the same machine (k = n = 1, its own refractory)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from biostream.data.schema import PHYSIOLOGICAL, TECHNICAL
from biostream.models.alarms import AlarmPolicy, alarm_episodes, class_alarms
from biostream.serving.streaming.policy import BedAlarms


@st.composite
def recordings(draw):
    n = draw(st.integers(1, 6))
    policy = AlarmPolicy(k=draw(st.integers(1, n)), n=n, refractory_s=draw(st.integers(0, 40)), tolerance_s=0)
    length = draw(st.integers(1, 300))
    above = np.asarray(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    # runs, not coin flips: alarms open, pause within and beyond the refractory period, and close
    above = np.repeat(above, draw(st.integers(1, 12)))[:length] if draw(st.booleans()) else above
    length = len(above)
    technical = np.asarray(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
    fired = np.asarray(draw(st.lists(st.sampled_from([False] * 9 + [True]), min_size=length, max_size=length)))
    score = np.where(above, 1.0, -1.0) + np.asarray(draw(st.lists(st.floats(0, 0.5), min_size=length,
                                                                 max_size=length)))
    resets = sorted(set(draw(st.lists(st.integers(1, max(1, length - 1)), max_size=3)))) if length > 1 else []
    restarts = set(draw(st.lists(st.integers(0, length - 1), max_size=4)))
    return policy, score, technical, fired & above, resets, restarts


@settings(max_examples=300, deadline=None)
@given(recordings())
def test_the_streams_alarm_step_gives_the_batch_policys_alarms(case):
    policy, score, technical, fired, resets, restarts = case
    t = np.arange(len(score)) + np.searchsorted(resets, np.arange(len(score)), side="right") * 10_000
    pid = np.zeros(len(score), dtype=np.int64)  # a reset is a jump in time: a new recording
    breaks = np.zeros(len(score), dtype=bool)
    breaks[[0, *resets]] = True
    want = class_alarms(pid, t, SimpleNamespace(score=score, technical=technical, rules=np.where(fired, 1.0, -1.0)),
                        0.0, policy, breaks)
    expected = sorted((int(e.start_s), int(e.end_s), cls) for cls in (PHYSIOLOGICAL, TECHNICAL)
                      for e in alarm_episodes(pid, t, want[cls], breaks).itertuples())

    bed, closed = BedAlarms(policy), []
    for i in range(len(score)):
        if i in resets:
            closed.append(bed.reset())
        if i in restarts:  # another process takes over: the state as the store keeps it
            bed = BedAlarms.from_dict(policy, json.loads(json.dumps(bed.to_dict())))
        step = bed.step(int(t[i]), float(score[i]), bool(score[i] > 0), bool(technical[i]), bool(fired[i]))
        closed.append(step.closed)
    closed.append(bed.close())
    got = sorted((e.start, e.end, e.alarm_class) for e in closed if e is not None)
    assert got == expected
