"""Explanations: every detector says which features and signals drove a score, faithfully."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from biostream.features import feature_names, windows_at
from biostream.models.alarms import AlarmPolicy
from biostream.models.bundle import ModelBundle, top_signals
from biostream.models.detectors import NAMES, make_detector


def _rows(model_data, n=40, seed=3):
    return model_data.evaluation.sample(n, random_state=seed)


def _windows(model_data, rows):
    return windows_at(model_data.dataset.vitals, model_data.pipeline.signals, model_data.pipeline.geometry.window_s,
                      rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())


@pytest.mark.parametrize("name", NAMES)
def test_explanations_have_one_finite_value_per_feature_or_signal(name, fitted, model_data):
    det = fitted[name]
    X = model_data.view(det, _rows(model_data))
    out = det.explain(X)
    width = len(feature_names(model_data.pipeline.signals)) if det.explains == "features" else len(
        model_data.pipeline.signals)
    assert out.shape == (40, width) and np.isfinite(out).all()
    if det.explains == "features":  # columns the model does not read contribute nothing
        read = np.concatenate(det.parts_)
        unused = np.setdiff1d(np.arange(width), read)
        assert len(unused) and (out[:, unused] == 0).all()
        assert (out[:, read] != 0).any()


def test_iforest_shap_orders_rows_as_the_scores_do(fitted, model_data):
    det = fitted["iforest"]
    X = model_data.view(det, _rows(model_data, 200))
    rho = spearmanr(det.explain(X).sum(axis=1), det.decision_function(X)).statistic
    assert rho > 0.999, f"sum of SHAP values vs score: Spearman {rho:.4f}"


def test_iforest_of_one_feature_trees_is_explained(model_data):
    """With `max_features` small enough that a tree sees one feature (a small part of a per-signal forest, as a
    study may choose), tree SHAP still explains it (SHAP's IsoTree fails on one-feature trees by itself)."""
    det = make_detector("iforest", n_estimators=20, max_features=1e-3, random_state=0)
    det.fit(model_data.view(det, model_data.train))
    assert all(len(f) == 1 for f in det.models_[0].estimators_features_)
    X = model_data.view(det, _rows(model_data, 100))
    contrib = det.explain(X)
    assert np.isfinite(contrib).all() and (contrib != 0).any()
    rho = spearmanr(contrib.sum(axis=1), det.decision_function(X)).statistic
    assert rho > 0.999, f"sum of SHAP values vs score: Spearman {rho:.4f}"


def test_ocsvm_kernel_shap_adds_up_to_the_score(fitted, model_data):
    det = fitted["ocsvm"]
    X = model_data.view(det, _rows(model_data, 20))
    contrib = det.explain(X)
    base = np.average(det._model_scores(0, det.background_[:, det.parts_[0]]), weights=det.background_weights_)
    np.testing.assert_allclose(contrib.sum(axis=1) + base, det.decision_function(X), atol=1e-6)
    np.testing.assert_array_equal(det.explain(X), contrib)  # seeded: the same rows, the same values


def test_per_signal_ocsvm_shap_adds_up_to_the_part_that_scored(model_data):
    """Per signal, a row is explained by its highest part: the contributions (on the common scale) plus that
    part's expected score add up to the row's score."""
    det = make_detector("ocsvm", per_signal=True, n_components=50, random_state=0)
    det.fit(model_data.view(det, model_data.train))
    X = model_data.view(det, _rows(model_data, 12))
    contrib, scores = det.explain(X), det.decision_function(X)
    best = det._part_scores(X).argmax(axis=1)
    for i, k in enumerate(best):
        cols, (a, b) = det.parts_[k], det.norms_[k]
        base = np.average(det._model_scores(k, det.background_[:, cols]), weights=det.background_weights_)
        assert contrib[i, cols].sum() + (base - a) / b == pytest.approx(scores[i], abs=1e-6 * max(1.0, abs(scores[i])))


def test_signal_explanations_add_up_to_the_score(fitted, model_data):
    lstm, clinical = fitted["lstm_ae"], fitted["clinical"]
    rows = _rows(model_data)
    X = model_data.view(lstm, rows)
    np.testing.assert_allclose(lstm.explain(X).sum(axis=1), lstm.decision_function(X), rtol=1e-6, atol=1e-9)
    W = model_data.view(clinical, rows)
    np.testing.assert_array_equal(clinical.explain(W).max(axis=1), clinical.decision_function(W))


@pytest.mark.parametrize("name", NAMES)
def test_the_signal_that_jumped_explains_the_score(name, fitted, model_data, tmp_path):
    """HR at 175/min for the last minute of quiet windows: through the bundle (raw windows in, after a
    save/load round trip), HR's contribution is the one that grows most, for every detector."""
    det = fitted[name]
    bundle = ModelBundle(model_data.pipeline, det, AlarmPolicy(3, 5, 120, 30))
    bundle.save(tmp_path / "bundle")
    back = ModelBundle.load(tmp_path / "bundle")
    ev = model_data.evaluation
    quiet = ev[(ev["label"] == 0) & (ev["artefact"] == 0) & (ev["alarm"] == 0)
               & (ev["time_s"] >= model_data.pipeline.geometry.window_s)].sample(5, random_state=8)  # signals read
    windows = _windows(model_data, quiet)
    spiked = windows.copy()
    spiked[:, model_data.pipeline.signals.index("hr"), -60:] = 175.0
    before, after = back.explain(windows), back.explain(spiked)
    growth = after.signals - before.signals
    assert (growth.idxmax(axis=1) == "hr").all(), growth.round(3).to_string()
    assert [top[0] for top in after.top_signals(1)].count("hr") >= 4, after.signals.round(3).to_string()
    np.testing.assert_allclose(after.signals.to_numpy(), bundle.explain(spiked).signals.to_numpy(), atol=1e-9)
    if det.explains == "features":
        np.testing.assert_allclose(after.features.sum(axis=1), after.signals.sum(axis=1), atol=1e-9)
        top = (after.features - before.features).mean().idxmax()
        assert top.startswith("hr__") or top in ("shock_index", "hr_map_corr"), top
    else:
        assert after.features is None


def test_top_signals_are_positive_contributions_above_rounding():
    """A signal whose occlusion changed nothing shows a contribution of ~1e-16 (the rescoring batch's last bits):
    it is not named; real positive contributions are, strongest first, at most k."""
    names = ["hr", "spo2", "sbp", "map"]
    c = np.array([[5.0, 1e-15, 0.5, -2.0], [0.0, 0.0, 0.0, 0.0], [1e-3, 2e-3, 3e-3, 4e-3]])
    assert top_signals(c, names, 3) == [["hr", "sbp"], [], ["map", "sbp", "spo2"]]
