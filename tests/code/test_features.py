"""The feature function on hand-made windows: values, missing data, no look-ahead, no cross-patient windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from biostream.core.config import ConfigError
from biostream.core.params import validate
from biostream.features import (
    CROSS,
    PER_SIGNAL,
    InputPipeline,
    Preprocessor,
    WindowGeometry,
    feature_min_scale,
    feature_names,
    featurize,
    group_columns,
    iter_cohort_windows,
    recording_windows,
    sequence_view,
    window_features,
)
from biostream.features.preprocess import TAIL_QUANTILE, TAIL_Z
from biostream.features.readiness import READ_COLUMN, Readiness, read_bits

SIGNALS = ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "etco2")
W = 60
# the hand-made windows below are all "recent"; context tests use their own geometry
GEO = WindowGeometry(window_s=W, recent_s=W, block_s=10, sequence_s=W, sequence_step_s=5)


def feats(window: np.ndarray, geometry: WindowGeometry = GEO) -> dict[str, float]:
    """Features of one (S, W) window as a name -> value dict."""
    return dict(zip(feature_names(SIGNALS), window_features(window[None], SIGNALS, geometry)[0], strict=True))


def base_window() -> np.ndarray:
    rng = np.random.default_rng(0)
    level = np.array([70, 97, 120, 70, 87, 14, 36.8, 38])
    return (level[:, None] + rng.normal(0, 1, (len(SIGNALS), W))).astype(np.float32)  # as the dataset stores them


def test_known_values_on_a_ramp():
    w = base_window()
    w[0] = 60 + np.arange(W) * 0.5  # HR rising 0.5/s = 30/min
    f = feats(w)
    assert f["hr__last"] == pytest.approx(60 + 59 * 0.5)
    assert f["hr__mean"] == pytest.approx(60 + 29.5 * 0.5)
    assert f["hr__min"] == 60 and f["hr__max"] == pytest.approx(89.5)
    assert f["hr__slope"] == pytest.approx(30.0)
    assert f["hr__delta"] == pytest.approx(29.5)
    assert f["hr__mad"] == pytest.approx(7.5)
    assert f["hr__missing"] == 0
    assert f["hr__entropy"] == pytest.approx(0.0), "a monotonic series has one ordinal pattern"
    assert f["hr__peaks"] == 0
    assert f["hr__age"] == 0
    assert f["hr__std"] == pytest.approx(np.std(w[0]))
    assert f["shock_index"] == pytest.approx(w[0, -1] / w[2, -1])
    assert f["pulse_pressure"] == pytest.approx(w[2].mean() - w[3].mean())


def test_spectrum_peaks_and_age():
    w = base_window()
    t = np.arange(W)
    w[1] = 95 + 2 * np.sin(2 * np.pi * t * 6 / W)  # 6 cycles per window
    w[2, :] = 120.0
    w[2, 45:] = 118.0  # a fresh cuff reading 15 s before the end, then held
    f = feats(w)
    assert f["spo2__dom_freq"] == pytest.approx(6 / W)
    assert f["spo2__peaks"] == 6
    assert f["sbp__age"] == 14
    assert f["hr__hf_power"] > f["spo2__hf_power"], "white noise has more high-frequency power than a slow sine"
    assert 0.8 < f["hr__entropy"] <= 1.0


def test_missing_values_are_explicit():
    w = base_window()
    w[6, :] = np.nan  # temperature not monitored
    w[0, 10:30] = np.nan
    f = feats(w)
    assert f["temp__missing"] == 1.0
    for name in ("last", "mean", "std", "min", "max", "slope", "delta", "mad", "entropy", "dom_freq", "hf_power"):
        assert np.isnan(f[f"temp__{name}"]), name
    assert f["temp__age"] == W and f["temp__peaks"] == 0
    assert f["hr__missing"] == pytest.approx(20 / W)
    assert f["hr__mean"] == pytest.approx(np.nanmean(w[0]))
    assert f["hr__last"] == w[0, -1]
    w[0, -5:] = np.nan
    assert feats(w)["hr__last"] == w[0, -6], "the last observed value"


def test_all_missing_window_gives_finite_model_inputs():
    w = np.full((1, len(SIGNALS), W), np.nan)
    raw = window_features(w, SIGNALS, GEO)
    assert raw.shape == (1, len(SIGNALS) * len(PER_SIGNAL) + len(CROSS))
    pre = Preprocessor.fit(window_features(base_window()[None].repeat(3, 0), SIGNALS, GEO), base_window().T,
                           min_scale=feature_min_scale(SIGNALS, GEO))
    pipe = InputPipeline(SIGNALS, GEO, pre)
    for kind in ("features", "sequence", "window"):
        x = pipe.view(kind, w)
        assert x.shape[0] == 1
        if kind != "window":
            assert np.isfinite(x).all(), kind


def test_no_look_ahead():
    rng = np.random.default_rng(1)
    rec = rng.normal(80, 5, (600, len(SIGNALS)))
    ends = np.arange(0, 600, 7)
    before = window_features(recording_windows(rec, W, ends), SIGNALS, GEO)
    changed = rec.copy()
    changed[300:] = 999.0  # a different future
    after = window_features(recording_windows(changed, W, ends), SIGNALS, GEO)
    past = ends < 300
    np.testing.assert_array_equal(before[past], after[past])
    assert not np.allclose(before[~past], after[~past])


def test_windows_never_span_two_patients():
    n = 200
    df = pd.DataFrame({
        "patient_id": ["a"] * n + ["b"] * n,
        "time_s": np.r_[np.arange(n), np.arange(n)],
        "split": "test",
        **{s: np.r_[np.full(n, 1.0), np.full(n, 2.0)] for s in SIGNALS},
    })
    for rows, win in iter_cohort_windows(df, SIGNALS, W, {"test": 1}):
        for r, w in zip(rows, win, strict=True):
            own = 1.0 if r < n else 2.0
            observed = w[~np.isnan(w)]
            assert (observed == own).all()
            t = r % n
            assert np.isnan(w[:, : max(0, W - 1 - t)]).all(), "seconds before the recording are missing"


def test_stored_features_equal_a_hand_built_window(small_dataset, small_params, configs):
    """Training/serving parity: the featurize table's row equals window_features of the raw window an
    integrator would send (the W seconds ending at that second, missing as NaN), with the signals a learned model
    may not read yet hidden as the service hides them (`Readiness`), and the same signals read."""
    params = validate(small_params).featurize
    table = featurize(small_dataset.vitals, configs.signals.keys, params)
    names = feature_names(configs.signals.keys)
    v = small_dataset.vitals
    picks = table.sample(25, random_state=3)
    picks = pd.concat([picks, table[table["time_s"] < 5].head(3)])  # windows at the start of a recording
    w = params.geometry.window_s
    for row in picks.itertuples():
        rec = v[(v["patient_id"] == row.patient_id) & (v["time_s"] <= row.time_s)].tail(w)
        window = np.full((len(configs.signals.keys), w), np.nan)
        window[:, w - len(rec):] = rec[list(configs.signals.keys)].to_numpy().T
        hidden, read = Readiness.of(params).hide(window[None])
        served = window_features(hidden, configs.signals.keys, params.geometry)[0].astype(np.float32)
        stored = table.loc[row.Index, names].to_numpy(np.float32)
        np.testing.assert_array_equal(served, stored)
        assert table.loc[row.Index, READ_COLUMN] == read_bits(read)[0]
        if row.time_s < Readiness.of(params).min_history_s * Readiness.of(params).min_observed - 1:
            assert table.loc[row.Index, READ_COLUMN] == 0, "a new recording: no signal read yet"


def test_context_features_see_a_shift_long_after_its_onset():
    geo = WindowGeometry(window_s=1800, recent_s=120, block_s=60, sequence_s=120, sequence_step_s=5)
    rng = np.random.default_rng(4)
    w = 80 + rng.normal(0, 1, (len(SIGNALS), 1800))
    w[0, 1200:] += 20  # HR stepped up 10 minutes ago: the recent part alone looks like a steady HR
    w[5, :] = 14 + np.arange(1800) / 1800 * 6  # RR drifting up 6/min over 30 min = 12/h
    w[7, :600] = np.nan
    f = feats(w, geo)
    assert f["hr__ctx_shift"] == pytest.approx(20, abs=1)
    assert abs(f["spo2__ctx_shift"]) < 1
    assert f["rr__ctx_trend"] == pytest.approx(12, rel=0.05)
    assert f["etco2__ctx_missing"] == pytest.approx(1 / 3)
    assert f["hr__ctx_std"] > 5 > f["spo2__ctx_std"]
    w[0, :900] = np.nan  # no baseline: the older half is missing
    assert np.isnan(feats(w, geo)["hr__ctx_shift"])


def test_relative_features_against_the_patients_usual_behaviour():
    """Frozen sensor vs cuff hold, sudden jump, noisy sensor and a MAP that moves alone, each against the
    same window without the fault."""
    geo = WindowGeometry(window_s=1800, recent_s=120, block_s=60, sequence_s=120, sequence_step_s=5)
    rng = np.random.default_rng(5)
    level = np.array([70, 97, 120, 70, 0, 14, 36.8, 38])
    clean = np.round(level[:, None] + rng.normal(0, 1.2, (len(SIGNALS), 1800)))
    clean[4] = clean[3] + (clean[2] - clean[3]) / 3.0  # MAP as the monitor derives it
    cuff_times = np.arange(0, 1800, 180)  # SBP held between cuff readings every 3 min
    clean[2] = np.repeat(clean[2, cuff_times], 180)
    clean[4] = clean[3] + (clean[2] - clean[3]) / 3.0
    ok = feats(clean, geo)

    frozen = clean.copy()
    frozen[0, -60:] = frozen[0, -61]  # HR frozen for a minute
    f = feats(frozen, geo)
    assert f["hr__stale"] > np.log1p(30) and ok["hr__stale"] < np.log1p(8)
    assert ok["sbp__stale"] < np.log1p(2), "a cuff's hold is its usual behaviour, not a frozen sensor"
    starting = clean.copy()
    starting[:, :800] = np.nan  # 1,000 s into a recording: 100 s of one held cuff reading in the older half
    f = feats(starting, geo)
    assert np.isnan(f["sbp__stale"]), "no usual interval yet: unknown, not extreme"
    assert np.isfinite(f["hr__stale"]), "a continuous signal changes often enough in 100 s"

    jumped = clean.copy()
    jumped[5, -3:] += 15  # RR spike in the last 3 s
    assert feats(jumped, geo)["rr__jump"] == pytest.approx(ok["rr__jump"] + 15, abs=1.5)

    noisy = clean.copy()
    noisy[1, -120:] += rng.normal(0, 8, 120)  # SpO2 probe noise x8
    assert feats(noisy, geo)["spo2__step_ratio"] > np.log(4) > abs(ok["spo2__step_ratio"]) * 4

    shifted = clean.copy()
    shifted[4, -300:] += 20  # MAP alone 20 mmHg up: transducer, not physiology
    assert feats(shifted, geo)["map_residual"] == pytest.approx(20, abs=0.5) and abs(ok["map_residual"]) < 1


def test_window_geometry_is_checked():
    with pytest.raises(ConfigError, match="multiple of block_s"):
        WindowGeometry(window_s=100, recent_s=60, block_s=30, sequence_s=60, sequence_step_s=5)
    with pytest.raises(ConfigError, match="recent_s"):
        WindowGeometry(window_s=100, recent_s=200, block_s=10, sequence_s=60, sequence_step_s=5)
    with pytest.raises(ConfigError, match="sequence_s"):
        WindowGeometry(window_s=100, recent_s=60, block_s=10, sequence_s=62, sequence_step_s=5)


def test_sequence_view_pools_the_last_seconds_and_masks():
    geo = WindowGeometry(window_s=20, recent_s=10, block_s=10, sequence_s=10, sequence_step_s=5)
    w = np.full((1, 2, 20), np.nan)
    w[0, 0] = np.arange(20.0) - 10
    w[0, 1, 10:15] = 1.0
    seq, mask = sequence_view(w, geo)
    assert seq.shape == (1, 2, 2)  # (n, steps, signals)
    assert seq[0, :, 0].tolist() == [2.0, 7.0]
    assert mask[0, :, 1].tolist() == [1.0, 0.0]


def test_group_columns_and_wrong_shapes():
    names = feature_names(SIGNALS)
    cols = group_columns(len(names), ["quality"])
    assert [names[c] for c in cols] == [f"{s}__{f}" for s in SIGNALS for f in ("missing", "ctx_missing")]
    with pytest.raises(ValueError, match="choose one or more"):
        group_columns(len(names), ["colour"])
    pipe = InputPipeline(SIGNALS, GEO, Preprocessor.fit(np.zeros((2, len(names))), np.zeros((2, 8))))
    with pytest.raises(ValueError, match=r"shape \(n, 8 signals, >= 60 seconds\)"):
        pipe.view("features", np.zeros((1, 8, 30)))
    with pytest.raises(ValueError, match=r"shape \(n, 8 signals"):
        pipe.view("features", np.zeros((1, 7, 60)))


def test_views_read_only_the_tail_they_need():
    """A longer window gives the same view as its last `input_length` seconds: the sequence view reads only
    `sequence_s`, so a served LSTM needs just that much history."""
    names = feature_names(SIGNALS)
    rng = np.random.default_rng(5)
    geo = WindowGeometry(window_s=W, recent_s=20, block_s=10, sequence_s=20, sequence_step_s=5)
    pipe = InputPipeline(SIGNALS, geo, Preprocessor.fit(rng.normal(size=(20, len(names))),
                                                          rng.normal(80, 5, (20, len(SIGNALS)))))
    assert pipe.input_length("sequence") == 20 < pipe.input_length("features") == pipe.input_length("window") == W
    long = rng.normal(80, 5, (2, len(SIGNALS), W + 40))
    for kind in ("features", "sequence", "window"):
        tail = long[..., -pipe.input_length(kind):]
        np.testing.assert_array_equal(pipe.view(kind, long), pipe.view(kind, tail))


def test_preprocessor_round_trip_and_train_only_statistics():
    rng = np.random.default_rng(2)
    names = feature_names(SIGNALS)
    train = rng.normal(0, 1, (500, len(names)))
    pre = Preprocessor.fit(train, rng.normal(80, 5, (500, len(SIGNALS))), feature_min_scale(SIGNALS, GEO))
    again = Preprocessor.from_dict(pre.to_dict())
    test = rng.normal(3, 1, (10, len(names)))
    np.testing.assert_array_equal(pre.transform(test), again.transform(test))
    np.testing.assert_allclose(pre.feature_median, np.median(train, axis=0))
    z = pre.transform(np.full((1, len(names)), np.nan))
    assert (z == 0).all(), "missing features are imputed at the training median"
    assert np.abs(pre.transform(test * 100)).max() <= pre.clip


def test_preprocessor_scales_each_feature_by_its_normal_tail():
    """A heavy-tailed feature keeps what lies beyond its normal range: the normal rows' 99.99th percentile of
    |z| lands at TAIL_Z in every feature, values up to 3x beyond it stay apart, and anomalous rows (outside
    `normal`) do not set the tail."""
    rng = np.random.default_rng(3)
    names = feature_names(SIGNALS)
    train = rng.normal(0, 1, (20000, len(names)))
    heavy = names.index("hr__stale")
    train[:, heavy] = rng.standard_t(2, 20000)  # normal rows reach tens of IQRs
    normal = np.ones(len(train), dtype=bool)
    normal[:200] = False
    train[:200, heavy] = 1e4  # anomalies in the training patients: not the normal tail
    pre = Preprocessor.fit(train, rng.normal(80, 5, (500, len(SIGNALS))), normal=normal)
    z = pre.transform(train[normal]).astype(np.float64)
    tails = np.quantile(np.abs(z), TAIL_QUANTILE, axis=0)
    np.testing.assert_allclose(tails, TAIL_Z, rtol=0.05)
    normal_max = np.abs(z[:, heavy]).max()
    beyond = np.quantile(np.abs(train[normal, heavy]), TAIL_QUANTILE) * 2.5
    row = np.zeros((1, len(names)))
    row[0, heavy] = beyond
    assert pre.transform(row)[0, heavy] > 1.5 * min(normal_max, TAIL_Z * 1.2), "beyond the normal tail stays visible"
    assert pre.clip == 3 * TAIL_Z
