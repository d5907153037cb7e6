"""Building blocks of the synthetic generator."""

from __future__ import annotations

import numpy as np

from biostream.sources.synthetic import hold_samples, ou_process, place_events, trapezoid


def test_ou_process_is_stationary_with_the_given_sd():
    rng = np.random.default_rng(0)
    x = np.concatenate([ou_process(rng, 20_000, 5.0, 60.0) for _ in range(10)])
    assert abs(x.std() - 5.0) < 0.5
    assert abs(x.mean()) < 1.0
    lag = np.corrcoef(x[:-60], x[60:])[0, 1]
    assert 0.25 < lag < 0.5  # exp(-1) at one time constant


def test_place_events_never_overlap_and_keep_gaps():
    rng = np.random.default_rng(1)
    durations = rng.integers(10, 600, 12)
    starts = place_events(rng, 10_000, durations, warmup=500, min_gap=120)
    assert len(starts) >= 1
    ends = starts + durations[: len(starts)]
    assert starts[0] >= 500 and ends[-1] <= 10_000
    assert (starts[1:] - ends[:-1] >= 120).all()


def test_place_events_drops_what_does_not_fit():
    rng = np.random.default_rng(2)
    starts = place_events(rng, 1000, np.array([450, 450, 450]), warmup=100, min_gap=50)
    assert len(starts) == 1


def test_hold_samples_holds_until_next_reading():
    values = np.arange(10.0)
    held = hold_samples(values, np.array([2, 6]))
    assert np.isnan(held[:2]).all()
    assert held[2:].tolist() == [2, 2, 2, 2, 6, 6, 6, 6]


def test_trapezoid_shape():
    s = trapezoid(10, 2, 5, 3)
    assert s.tolist()[:3] == [0.5, 1.0, 1.0] and s.max() == 1.0 and len(s) == 10 and s[-1] > 0
