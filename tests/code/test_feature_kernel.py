"""The compiled feature kernel (`biostream.features.kernel`, behind `window_features`) against the plain numpy
statement of the same definitions (tests/code/reference_features.py), on windows built to reach every branch:
gaps, all-missing and constant signals, held cuff values, frozen stretches, spikes, one or two observed
seconds, absent signals, and other window geometries."""

from __future__ import annotations

import numpy as np
import pytest

from biostream.features import CROSS, PER_SIGNAL, WindowGeometry, feature_names, window_features
from biostream.features.kernel import CROSS_LAYOUT, LAYOUT
from tests.code.reference_features import window_features as reference

SIGNALS = ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "etco2")
LEVELS = np.array([75.0, 97.0, 120.0, 70.0, 85.0, 14.0, 36.8, 35.0])
RESOLUTION = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 1.0])  # what monitors display


def _windows(n: int, w: int, recent_s: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.3, size=(n, len(SIGNALS), w)), axis=-1) + rng.normal(0, 1, (n, len(SIGNALS), w))
    x = LEVELS[None, :, None] * (1 + 0.02 * walk / 10)
    x = np.round(x / RESOLUTION[None, :, None]) * RESOLUTION[None, :, None]
    for i in range(n):
        kind = i % 12
        j = rng.integers(len(SIGNALS))
        if kind == 0:  # a gap, somewhere
            a = rng.integers(w)
            x[i, j, a : a + rng.integers(1, w // 2)] = np.nan
        elif kind == 1:  # a signal absent throughout
            x[i, j] = np.nan
        elif kind == 2:  # a cuff: a reading held for minutes
            x[i, j] = np.repeat(x[i, j, ::180], 180)[:w]
        elif kind == 3:  # frozen for the last few minutes
            k = rng.integers(5, w // 2)
            x[i, j, -k:] = x[i, j, -k - 1]
        elif kind == 4:  # a spike
            x[i, j, -rng.integers(1, 30)] *= 1.5
        elif kind == 5:  # one, two or three observed seconds in the recent part
            x[i, j, -recent_s:] = np.nan
            x[i, j, -rng.integers(1, recent_s, size=rng.integers(1, 4))] = LEVELS[j]
        elif kind == 6:  # constant
            x[i, j] = LEVELS[j]
        elif kind == 7:  # the start of a recording: nothing before it
            x[i, :, : rng.integers(w // 2, w - 5)] = np.nan
        elif kind == 8:  # scattered missing seconds
            x[i, j, rng.random(w) < 0.3] = np.nan
        elif kind == 9:  # everything missing
            x[i] = np.nan
    return x.astype(np.float32)  # as the dataset stores vitals (the kernel reads float32)


@pytest.mark.parametrize(("geometry", "seed"), [
    (WindowGeometry(1800, 120, 60, 120, 5), 0),
    (WindowGeometry(600, 60, 30, 60, 5), 1),
    (WindowGeometry(240, 8, 120, 240, 1), 2),  # a recent part of 8 s; two blocks, one in the older half
])
def test_kernel_equals_the_numpy_definitions(geometry, seed):
    x = _windows(96, geometry.window_s, geometry.recent_s, seed)
    got, want = window_features(x, SIGNALS, geometry), reference(x, SIGNALS, geometry)
    names = np.array(feature_names(SIGNALS))
    assert got.shape == want.shape == (len(x), len(names))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))  # the same features undefined
    assert np.isfinite(want).sum() > 0.7 * want.size  # mostly defined values are compared
    # The reference sums blocks, steps and MAP residuals in float32 (BLAS, pairwise) and divides the window's
    # missing count in float32; the kernel works in float64 (its sums of float32 values are exact): block means
    # of ~37 degC differ in the 7th digit, which a trend or spread of such means (~0.01) shows in its 4th.
    # Everything else agrees to float64 rounding.
    summed = np.array([n.endswith(("__ctx_trend", "__ctx_std", "__ctx_shift", "__ctx_missing", "__step_ratio",
                                   "map_residual")) for n in names])
    np.testing.assert_allclose(got[:, ~summed], want[:, ~summed], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got[:, summed], want[:, summed], rtol=1e-3, atol=1e-4)


def test_the_kernel_writes_the_features_in_their_named_order():
    assert LAYOUT == PER_SIGNAL and CROSS_LAYOUT == CROSS


def test_kernel_keeps_numpy_semantics_for_impossible_arithmetic():
    """A zero systolic pressure (never in the data: cleaned as implausible) gives an infinite shock index, as
    numpy's division does, not an error."""
    g = WindowGeometry(240, 60, 60, 60, 5)
    x = _windows(2, g.window_s, g.recent_s, 3)
    x[:, 2] = 0.0
    got = window_features(x, SIGNALS, g)
    assert np.isinf(got[:, len(SIGNALS) * len(PER_SIGNAL)]).all()


def test_windows_of_another_shape_are_refused():
    g = WindowGeometry(240, 60, 60, 60, 5)
    with pytest.raises(ValueError, match=r"shape \(n, 8 signals, window_s\)"):
        window_features(np.zeros((2, 7, 240)), SIGNALS, g)
    with pytest.raises(ValueError, match="windows have 300 seconds, the geometry 240"):
        window_features(np.zeros((2, 8, 300)), SIGNALS, g)
