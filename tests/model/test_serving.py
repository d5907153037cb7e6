"""The service's behaviour without a server (`biostream.serving`): schemas, input checks and answers.

The same code runs inside `bentoml serve` (tests/pipeline/test_service.py checks it over HTTP)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError

from biostream.features import feature_signal_weights, windows_at
from biostream.models.alarms import apply_policy
from biostream.models.answer import occlusion_contributions
from biostream.models.detectors import NAMES, make_detector
from biostream.models.detectors.base import load_detector
from biostream.models.detectors.lstm_ae import ORT_MAX_ROWS
from biostream.models.detectors.ocsvm import CHUNK_ROWS
from biostream.serving import Schemas, pack_f32
from tests.model.conftest import POLICY, scorer_for, window_payload


@pytest.mark.parametrize("name", NAMES)
def test_predict_equals_the_bundle_scores_of_the_same_windows(name, fitted, model_data, configs, rows):
    """Parity: JSON in, validated, scored = the bundle's scores of the stored windows (what `evaluate` scores)."""
    scorer = scorer_for(fitted[name], model_data, configs)
    schemas = Schemas(scorer.spec)
    sig = model_data.pipeline.signals
    full = windows_at(model_data.dataset.vitals, sig, model_data.pipeline.geometry.window_s,
                      rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    want = scorer.bundle.score(full)
    # a window carries at least the model's window_s; a longer one is cut to it
    tails = full[..., -scorer.spec.window_s:]
    requests = [schemas.Window.model_validate_json(json.dumps(window_payload(w, sig))) for w in tails]
    out = scorer.predict(requests)
    np.testing.assert_allclose([p.score for p in out], want, rtol=0, atol=1e-9)
    assert [p.alarm for p in out] == list(want > scorer.threshold)
    technical = scorer.bundle.outputs(full).technical
    for p, tech in zip(out, technical, strict=True):
        assert p.model.version == "3" and p.threshold == scorer.threshold == 0.0
        assert p.alarm_class == (("technical" if tech else "physiological") if p.alarm else None)
        assert set(p.top_signals) <= set(sig)
    if scorer.spec.window_s < model_data.pipeline.geometry.window_s:  # the LSTM reads its last sequence_s, the
        # floor its technical checks' context
        assert name == "lstm_ae" and scorer.spec.window_s == scorer.bundle.combination.reads_s


def test_iforest_scores_are_scikit_learns(fitted, model_data):
    """The served forest (the compiled walk of its trees) scores as scikit-learn does, one row or many."""
    det = fitted["iforest"]
    X = model_data.view(det, model_data.evaluation.sample(300, random_state=4))
    slow = -det.models_[0].score_samples(X[:, det.parts_[0]])
    assert np.ptp(slow) > 1e-3  # the scores differ between windows, so the comparison below can fail
    one = np.concatenate([det.decision_function(X[i : i + 1]) for i in range(40)])  # one row at a time
    np.testing.assert_array_equal(one, slow[:40])
    np.testing.assert_array_equal(det.decision_function(X), slow)


def test_ocsvm_numpy_path_matches_scikit_learn(fitted, model_data):
    det = fitted["ocsvm"]
    X = model_data.view(det, model_data.evaluation.sample(CHUNK_ROWS + 50, random_state=4))
    slow = -det.models_[0].decision_function(X[:, det.parts_[0]])
    assert np.ptp(slow) > 1e-3  # the scores differ between windows, so the comparison below can fail
    one = np.concatenate([det.decision_function(X[i : i + 1]) for i in range(40)])  # one row at a time
    # scikit-learn keeps the kernel in float32 (the features' dtype); numpy works in float64: ~1e-8 apart
    np.testing.assert_allclose(one, slow[:40], rtol=0, atol=1e-7)
    whole = det.decision_function(X)  # more than one chunk
    np.testing.assert_allclose(whole, slow, rtol=0, atol=1e-7)
    np.testing.assert_allclose(one, whole[:40], rtol=0, atol=1e-12)  # the same numbers whatever the batch size
    assert (one > det.threshold_).tolist() == (slow[:40] > det.threshold_).tolist()


def test_lstm_onnx_runtime_path_matches_keras(fitted, model_data, tmp_path):
    """The served LSTM (ONNX Runtime on small batches) scores and explains as the Keras model evaluate runs."""
    fitted["lstm_ae"].save(tmp_path / "lstm")
    det = load_detector(tmp_path / "lstm")  # a fresh copy: the session's fitted model stays on TensorFlow
    X = model_data.view(det, model_data.evaluation.sample(ORT_MAX_ROWS + 50, random_state=4))
    keras_scores, keras_signals = det.decision_function(X), det.explain(X)
    det.prepare_for_serving()
    assert det._ort[0] is det.model_
    one = np.concatenate([det.decision_function(X[i : i + 1]) for i in range(40)])  # one window at a time: ORT
    np.testing.assert_allclose(one, keras_scores[:40], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(det.decision_function(X[:ORT_MAX_ROWS]), keras_scores[:ORT_MAX_ROWS], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(det.explain(X[:8]), keras_signals[:8], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(det.decision_function(X), keras_scores)  # a large batch stays on TensorFlow
    assert (one > det.threshold_).tolist() == (keras_scores[:40] > det.threshold_).tolist()


def test_ocsvm_alarms_name_signals_by_occlusion(fitted, model_data, configs, rows):
    """predict ranks an OCSVM alarm's signals by occlusion (its kernel SHAP is ~60 ms a window): the score's
    drop when one signal's features are set to the training median; a window made abnormal in one signal
    names that signal first."""
    scorer = scorer_for(fitted["ocsvm"], model_data, configs)
    sig = list(scorer.spec.signals)
    full = windows_at(model_data.dataset.vitals, sig, scorer.spec.window_s, rows["patient_id"].to_numpy(),
                      rows["time_s"].to_numpy())
    view = scorer.bundle.pipeline.view("features", full)
    scores = scorer.bundle.detector.decision_function(view)
    contrib = occlusion_contributions(scorer.bundle, view, scores)
    uses = feature_signal_weights(sig) > 0
    j = sig.index("spo2")
    by_hand = view.copy()
    by_hand[:, uses[:, j]] = 0.0
    np.testing.assert_allclose(contrib[:, j], scores - scorer.bundle.detector.decision_function(by_hand),
                               rtol=0, atol=1e-6)  # float32 inside the model: batch size moves the last bits
    # a normal window whose SpO2 falls to 80 % over its last 10 minutes
    normal = full[np.argmin(scores)].copy()
    normal[j, -600:] = np.linspace(normal[j, -601], 80.0, 600)
    schemas = Schemas(scorer.spec)
    out = scorer.predict([schemas.Window.model_validate_json(json.dumps(window_payload(normal, sig)))])[0]
    assert out.alarm and out.top_signals[0] == "spo2", out
    assert scorer.metadata().top_signals_method.startswith("occlusion")


def test_score_series_scores_every_second_as_evaluate_does(fitted, model_data, configs):
    """Every second of a recording sent as a series scores as the evaluate stage scores it from the feature table
    (a separate path: features computed by `featurize`, stored as float32), and the alarms and episodes are the
    alarm policy's over those scores, on a stretch chosen because it alarms."""
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    schemas = Schemas(scorer.spec)
    vitals, table = model_data.dataset.vitals, model_data.evaluation
    length = 1500
    # the evaluation patient whose first stretch has the most seconds above threshold
    firsts = table[table["time_s"] < length]
    stored = scorer.bundle.outputs_of_rows(firsts.reset_index(drop=True), vitals).score
    above = pd.Series(stored > scorer.threshold).groupby(firsts["patient_id"].to_numpy()).sum()
    pid = above.idxmax()
    rows = firsts[firsts["patient_id"] == pid]
    want = stored[(firsts["patient_id"] == pid).to_numpy()]
    rec = vitals[vitals["patient_id"] == pid]
    values = rec[list(scorer.spec.signals)].to_numpy()[:length]
    assert len(rows) == len(values) == length, "every second of the stretch is a row of the feature table"
    body = {"patient_id": pid, "start": "2026-11-21T08:00:00+00:00",
            "vitals": {s: [None if math.isnan(v) else float(v) for v in values[:, i]]
                       for i, s in enumerate(scorer.spec.signals)}}
    series = schemas.Series.model_validate_json(json.dumps(body))
    out = scorer.score_series(series)
    np.testing.assert_allclose(out.scores, want, rtol=0, atol=1e-6)
    t = np.arange(length)
    fired = scorer.series_outputs(values.T).rules > scorer.threshold  # a bedside rule that fires: on at once
    alarm = apply_policy(np.zeros(length), t, np.asarray(out.scores), scorer.threshold, POLICY,
                         immediate=fired).astype(bool)
    assert out.alarm == alarm.tolist()
    # episodes are the runs of alarm seconds
    edges = np.flatnonzero(np.diff(np.r_[False, alarm, False].astype(int)))
    runs = list(zip(edges[::2], edges[1::2], strict=True))
    assert runs, f"patient {pid}'s first {length} s must alarm for this test to check episodes"
    assert [((e.start - series.start).total_seconds(), (e.end - series.start).total_seconds())
            for e in out.episodes] == [(float(a), float(b)) for a, b in runs]
    for e, (a, b) in zip(out.episodes, runs, strict=True):
        assert e.peak_score == pytest.approx(max(out.scores[a:b]))
        assert (e.peak_time - series.start).total_seconds() == a + int(np.argmax(out.scores[a:b]))
        assert e.signals and set(e.signals) <= set(scorer.spec.signals)


@pytest.mark.parametrize("name", NAMES)
def test_explain_names_signals_and_features(name, fitted, model_data, configs, rows):
    scorer = scorer_for(fitted[name], model_data, configs)
    schemas = Schemas(scorer.spec)
    sig = model_data.pipeline.signals
    windows = windows_at(model_data.dataset.vitals, sig, scorer.spec.window_s, rows["patient_id"].to_numpy(),
                         rows["time_s"].to_numpy())
    driven = scorer.bundle.outputs(windows).rule_driven
    w = windows[int(np.argmin(driven))]  # the first window the model drives (the rules drive one where a rule holds)
    out = scorer.explain(schemas.Window.model_validate_json(json.dumps(window_payload(w, sig))))
    assert list(out.signals) == list(sig) and all(math.isfinite(v) for v in out.signals.values())
    assert out.driver == ("rules" if driven.all() else "model")
    assert (out.features is not None) == (fitted[name].explains == "features" and out.driver == "model")
    if out.features is not None:
        assert sum(out.features.values()) == pytest.approx(sum(out.signals.values()), abs=1e-6)
    assert out.method and out.score == pytest.approx(scorer.bundle.score(w[None])[0])
    meta = scorer.metadata()
    assert meta.window_s == scorer.spec.window_s and meta.detector == name and meta.metrics == {"events.event_f1": 0.5}


def test_a_score_the_rules_set_is_explained_by_the_rules(fitted, model_data, configs, rows):
    """A window whose MAP has been under 65 for three minutes: the floor's hypotension rule sets the score, and
    `explain` says so with the rules' score per signal (MAP's is the score), not the model's contributions."""
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    sig = list(model_data.pipeline.signals)
    w = windows_at(model_data.dataset.vitals, sig, scorer.spec.window_s, rows["patient_id"].to_numpy()[:1],
                   rows["time_s"].to_numpy()[:1])[0].copy()
    m = sig.index("map")
    w[m, -180:] = 55.0 + np.random.default_rng(0).normal(0, 1.5, 180).clip(-4, 4)  # a live signal, not frozen
    out = scorer.explain(Schemas(scorer.spec).Window.model_validate_json(json.dumps(window_payload(w, sig))))
    assert out.driver == "rules" and out.alarm and out.alarm_class == "physiological", out
    assert out.signals["map"] == pytest.approx(out.score) == pytest.approx((65 - w[m, -60:].max()) / 5)
    assert out.top_signals[0] == "map" and out.features is None and out.method.startswith("the bedside rules")
    safety = scorer.metadata().safety
    assert safety["model_alarms"] == bool(np.isfinite(fitted["iforest"].threshold_)) and safety["technical_checks"]


def _error(schema, body) -> str:
    schema = schema if hasattr(schema, "validate_json") else TypeAdapter(schema)
    with pytest.raises(ValidationError) as info:
        schema.validate_json(body if isinstance(body, (str, bytes)) else json.dumps(body))
    return json.dumps(info.value.errors(include_context=False, include_input=False))


def test_bad_windows_get_messages_naming_field_value_and_limit(fitted, model_data, configs):
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    schemas = Schemas(scorer.spec)
    W, win = scorer.spec.window_s, schemas.WindowInput  # one window as `explain` takes it
    good = {"patient_id": "bed-1", "time": "2026-11-21T10:00:00Z",
            "vitals": {"hr": [70.0] * W, "spo2": [98] * W, "map": [80.0] * W}}
    TypeAdapter(win).validate_python(good)

    def with_hr(values):
        return {**good, "vitals": {**good["vitals"], "hr": values}}

    cases = {
        "hr[5] = 400 /min is outside the physiological range [20, 250]":
            with_hr([70.0] * 5 + [400.0] + [70.0] * (W - 6)),
        "hr[0] = -3": with_hr([-3.0] + [70.0] * (W - 1)),
        "vitals.hr is empty": {**good, "vitals": {"hr": []}},
        f"at most {scorer.spec.max_window_s} are accepted": {**good, "vitals": {"hr": [70.0] * 2401}},
        "vitals.spo2 has": with_hr([70.0] * (W - 1)),  # lengths differ
        "no signal sent": {**good, "vitals": {}},
        "read are missing (limit 90%": {**good, "vitals": {"hr": [None] * W}},
        "Extra inputs are not permitted": {**good, "vitals": {**good["vitals"], "lactate": [1.0] * W}},
        "valid number": with_hr(["72"] + [70.0] * (W - 1)),
        "patient_id": {k: v for k, v in good.items() if k != "patient_id"},
    }
    for needle, body in cases.items():
        msg = _error(win, body)
        assert needle in msg, (needle, msg)
    # NaN and Infinity are not JSON, but parsers accept them: refused by name, with the fix
    text = json.dumps(good).replace("[70.0, 70.0", "[NaN, 70.0", 1)
    assert "vitals.hr[0] is nan, not a finite number; send null" in _error(win, text)
    assert "not a finite number" in _error(win, json.dumps(good).replace("[70.0, 70.0", "[Infinity, 70.0", 1))
    assert "json_invalid" in _error(win, json.dumps(good)[:-5])
    batch = TypeAdapter(schemas.WindowBatch)
    two = json.dumps([good, good]).replace("[70.0, 70.0", "[-Infinity, 70.0", 2).replace("[-Infinity", "[70.0", 1)
    assert "[1].vitals.hr[0] is -inf, not a finite number; send null" in _error(batch, two)  # the window's index
    series = json.dumps({"patient_id": "p", "start": 0, "vitals": {"hr": [70.0, float("nan")]}})
    assert "vitals.hr[1] is nan, not a finite number" in _error(schemas.Series, series)
    # a batch is 1..max_batch_windows windows
    with pytest.raises(ValidationError, match="at least 1"):
        batch.validate_python([])
    with pytest.raises(ValidationError, match=f"at most {scorer.spec.max_batch_windows}"):
        batch.validate_python([good] * (scorer.spec.max_batch_windows + 1))


def test_vitals_f32_carries_the_same_windows_as_json_numbers(fitted, model_data, configs, rows):
    """A window's signals packed as base64 float32 (NaN = missing) validate to the same array, hence the same
    score, as the same values sent as JSON numbers (the cohort's vitals are float32: nothing is rounded)."""
    scorer = scorer_for(fitted["ocsvm"], model_data, configs)
    sig, W = list(scorer.spec.signals), scorer.spec.window_s
    full = windows_at(model_data.dataset.vitals, sig, W, rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    assert np.isnan(full).any()  # missing values travel as NaN
    window = TypeAdapter(Schemas(scorer.spec).WindowInput)
    bodies = [window_payload(w, sig) for w in full]
    as_numbers = [window.validate_json(json.dumps(b)) for b in bodies]
    as_packed = [window.validate_json(json.dumps({**b, "vitals": None, "vitals_f32": {
        s: pack_f32(np.array(v, dtype=float)) for s, v in b["vitals"].items()}})) for b in bodies]
    for a, b in zip(as_numbers, as_packed, strict=True):
        np.testing.assert_array_equal(a.array, b.array)
    assert [p.score for p in scorer.predict(as_packed)] == [p.score for p in scorer.predict(as_numbers)]


def test_bad_vitals_f32_gets_messages_naming_field_value_and_fix(fitted, model_data, configs):
    scorer = scorer_for(fitted["iforest"], model_data, configs)
    W, win = scorer.spec.window_s, TypeAdapter(Schemas(scorer.spec).WindowInput)
    ok = np.full(W, 70.0)
    good = {"patient_id": "bed-1", "time": 0, "vitals_f32": {"hr": pack_f32(ok), "spo2": pack_f32(ok + 27)}}
    win.validate_python(good)

    def with_hr(text):
        return {**good, "vitals_f32": {**good["vitals_f32"], "hr": text}}

    bad_value = ok.copy()
    bad_value[7] = 400.0
    cases = {
        "vitals_f32.hr[7] = 400 /min is outside the physiological range [20, 250] (configs/signals.yaml); send NaN":
            with_hr(pack_f32(bad_value)),
        "value [3] is inf, not a finite number; pack NaN for a missing value":
            with_hr(pack_f32(np.r_[ok[:3], np.inf, ok[4:]])),
        "not valid base64": with_hr("72, 73, 74"),
        "decodes to 6 bytes, not a whole number of float32 values": with_hr("AAAAAAAA"),
        "vitals_f32.spo2 has": with_hr(pack_f32(ok[1:])),  # lengths differ
        "vitals_f32.hr is empty": {**good, "vitals_f32": {"hr": ""}},
        "send the signals in `vitals`": {"patient_id": "bed-1", "time": 0},
        ", not both": {**good, "vitals": {"hr": ok.tolist()}},
        "Extra inputs are not permitted": {**good, "vitals_f32": {**good["vitals_f32"], "lactate": pack_f32(ok)}},
        "at most": with_hr("A" * (8 * scorer.spec.max_series_s)),  # longer than any request may be
    }
    for needle, body in cases.items():
        msg = _error(win, body)
        assert needle in msg, (needle, msg)
    assert "vitals_f32.hr[7]" in _error(win, with_hr(pack_f32(bad_value)))
    series = TypeAdapter(Schemas(scorer.spec).Series)
    packed = {s: pack_f32([70.0, np.nan, 71.0] if s == "hr" else [40.0] * 3) for s in scorer.spec.signals}
    got = series.validate_python({"patient_id": "p", "start": 0, "vitals_f32": packed}).array
    assert np.isnan(got[0, 1]) and np.isfinite(np.delete(got, 1, axis=1)).all()


def test_a_null_is_missing_and_an_absent_signal_is_missing_throughout(fitted, model_data, configs):
    scorer = scorer_for(fitted["ocsvm"], model_data, configs)
    W, win = scorer.spec.window_s, Schemas(scorer.spec).Window
    w = win.model_validate({"patient_id": "p", "time": 0, "vitals": {"hr": [None] * 10 + [70.0] * (W - 10),
                                                                      "spo2": [97] * W, "map": [75] * W}})
    assert np.isnan(w.array[0, :10]).all() and (w.array[0, 10:] == 70).all()
    assert np.isnan(w.array[list(scorer.spec.signals).index("temp")]).all()
    assert np.isfinite(scorer.predict([w])[0].score)


def test_explain_method_says_when_one_model_per_signal_explains():
    assert "one model per signal" in make_detector("ocsvm", per_signal=True).describe_explanation()
    assert "one model per signal" not in make_detector("ocsvm").describe_explanation()
    assert make_detector("lstm_ae").describe_explanation().startswith("each signal's share")
