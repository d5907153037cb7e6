"""Too little data is never a learned score: which signals a learned model reads (`Readiness`), and the technical
conditions reported instead ("new recording: learning baseline", "SpO2: no signal for 60 s")."""

from __future__ import annotations

import numpy as np
import pytest

from biostream.core.config import ConfigError
from biostream.features.readiness import Readiness, read_bits
from biostream.models.conditions import series_conditions, window_conditions

SIGNALS = ("hr", "spo2", "map")
READY = Readiness(min_history_s=300, min_observed=0.9)


def recording(seconds: int = 1200) -> np.ndarray:
    """(T, S) a recording: HR and SpO2 from second 0, MAP never monitored, SpO2 off from 600 to 700."""
    x = np.full((seconds, len(SIGNALS)), np.nan)
    x[:, 0] = 80.0
    x[:, 1] = 97.0
    x[600:700, 1] = np.nan
    return x


def windows_of(x: np.ndarray, length: int) -> np.ndarray:
    """(T, S, length) the window ending at every second (seconds before the recording missing)."""
    padded = np.vstack([np.full((length - 1, x.shape[1]), np.nan), x])
    return np.stack([padded[t : t + length].T for t in range(len(x))])


def test_a_signal_is_read_once_observed_long_enough_and_hidden_otherwise():
    w = windows_of(recording(), 600)
    hidden, read = READY.hide(w)
    assert not read[:269].any() and read[270:, 0].all(), "HR is read from 270 of the last 300 s on"
    assert not read[:, 2].any(), "MAP, never monitored, is never read"
    assert read[629, 1] and not read[630, 1], "SpO2 off at 600: read while 90 % of the last 300 s were observed"
    assert not read[700:969, 1].any() and read[969, 1], "back at 700: read again once 270 s were observed"
    assert np.isnan(hidden[650, 1]).all() and not np.isnan(hidden[650, 0]).any()
    np.testing.assert_array_equal(hidden[read], w[read])  # what is read is untouched
    assert read_bits(read[[0, 300, 650]]).tolist() == [0, 3, 1]
    assert Readiness().read(w[:1]).all(), "min_history_s 0: every signal read, as bundles before readiness"
    with pytest.raises(ValueError, match="cannot say"):
        READY.read(w[:, :, -100:])
    with pytest.raises(ConfigError, match="min_observed"):
        Readiness(300, 1.5)


def test_conditions_of_windows_equal_conditions_of_the_recording_second_by_second():
    x = recording()
    x[900:, :] = np.nan  # the monitor disconnected at 900
    series = series_conditions(x, READY, 60, 600)
    windows = window_conditions(windows_of(x, 600), READY, 60, 600)
    np.testing.assert_array_equal(series.learning, windows.learning)
    np.testing.assert_array_equal(series.silent_s, windows.silent_s)
    assert series.learning[:269].all() and not series.learning[270:900].any()
    assert series.silent_s[659, 1] == 60 and series.silent_s[658, 1] == 0, "SpO2: no signal after 60 s"
    assert series.silent_s[:, 2].max() == 0, "a signal never monitored is no condition"
    assert series.silent_s[959, 0] == 60 and series.silent_s[1199, 0] == 300
    assert windows.messages(SIGNALS)[659] == ["SpO2: no signal for 60 s"]
    assert windows.messages(SIGNALS)[10] == ["new recording: learning baseline"]
    assert windows.codes(SIGNALS)[1000] == ["no_signal:hr", "no_signal:spo2"]


def test_features_of_what_is_read_equal_features_of_windows_with_the_rest_hidden():
    """The compiled kernel skips the signals not read without copying the windows: the same features, bit for bit,
    as hiding them (every signal, the cross-signal ones included), and the sequence view likewise."""
    from biostream.features import feature_names
    from biostream.features.compute import window_features
    from biostream.features.pipeline import InputPipeline
    from biostream.features.preprocess import Preprocessor
    from biostream.features.windows import WindowGeometry

    signals = ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "etco2")
    geo = WindowGeometry(window_s=600, recent_s=120, block_s=60, sequence_s=120, sequence_step_s=5)
    rng = np.random.default_rng(3)
    w = rng.normal(80, 5, (40, len(signals), 600)).astype(np.float32)
    w[rng.random(w.shape) < 0.05] = np.nan
    w[:10, 1, -200:] = np.nan  # SpO2 off for 200 s
    w[10:20, :, :-100] = np.nan  # a new recording
    w[20:30, 2:5, :] = np.nan  # no blood pressure
    read = READY.read(w)
    assert read.any() and not read.all()
    hidden, _ = READY.hide(w)
    np.testing.assert_array_equal(window_features(w, signals, geo, read), window_features(hidden, signals, geo))
    n = len(feature_names(signals))
    pre = Preprocessor(np.zeros(n), np.ones(n), np.full(len(signals), 80.0), np.full(len(signals), 5.0))
    pipe = InputPipeline(signals, geo, pre, READY)
    view, got = pipe.view_and_read("sequence", w)
    np.testing.assert_array_equal(got, read)
    np.testing.assert_array_equal(view, pipe.view_and_read("sequence", hidden)[0])
