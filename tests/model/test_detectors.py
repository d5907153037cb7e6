"""Behaviour of every registered detector: the contract, direction, persistence and a quality floor."""

from __future__ import annotations

import json
import pickle

import keras
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from biostream.features import PER_SIGNAL, windows_at
from biostream.models.detectors import NAMES, load_detector, make_detector, undefined_where_unread
from biostream.models.detectors.base import SCORE_CHUNK, NotFittedError, score_rows, score_view
from tests.model.conftest import CLINICAL, detector_params

# a hyperparameter per detector and another value for it (set_params must set it, on the copy only)
CHANGED_PARAM = {"clinical": ("signals", ("hr",)), "iforest": ("n_estimators", 17), "ocsvm": ("nu", 0.31),
                 "lstm_ae": ("units", 7)}


def test_registry_has_the_four_detectors():
    assert set(NAMES) == {"clinical", "iforest", "ocsvm", "lstm_ae"}
    with pytest.raises(KeyError, match="unknown detector 'svm'; registered: clinical, iforest"):
        make_detector("svm")


@pytest.mark.parametrize("name", NAMES)
def test_contract(name, fitted, model_data, configs):
    det = fitted[name]
    rows = model_data.evaluation.head(50)
    X = model_data.view(det, rows)
    scores = det.decision_function(X)
    assert scores.shape == (50,) and np.isfinite(scores).all()
    assert isinstance(det.threshold_, float)
    labels = det.predict(X)
    assert set(np.unique(labels)) <= {0, 1}
    assert (labels == (scores > det.threshold_)).all()
    params = det.get_params()
    for key, value in detector_params(name, configs).items():
        assert params[key] == value, key
    twin = clone(det)
    assert twin.get_params() == params and not hasattr(twin, "threshold_")
    with pytest.raises(NotFittedError, match="not fitted"):
        twin.decision_function(X)
    key, other = CHANGED_PARAM[name]
    changed = clone(det).set_params(**{key: other})
    assert changed.get_params()[key] == other != params[key] and det.get_params()[key] == params[key]
    with pytest.raises(ValueError, match=f"reads the '{det.input_view}' view"):
        det.decision_function(np.zeros((2,) * (4 if X.ndim == 3 else 3)))


@pytest.mark.parametrize("name", NAMES)
def test_injected_spike_scores_above_its_neighbours(name, fitted, model_data):
    det = fitted[name]
    vitals = model_data.dataset.vitals
    quiet = model_data.evaluation[(model_data.evaluation["label"] == 0) & (model_data.evaluation["artefact"] == 0)
                                  & (model_data.evaluation["alarm"] == 0)]
    row = quiet.iloc[len(quiet) // 2]
    times = np.arange(row.time_s - 60, row.time_s + 1)
    pid = np.full(len(times), row.patient_id)
    windows = windows_at(vitals, model_data.pipeline.signals, model_data.pipeline.geometry.window_s, pid, times)
    spiked = windows.copy()
    hr = model_data.pipeline.signals.index("hr")
    spiked[-1, hr, -20:] = 175.0  # HR jumps to 175/min for the last 20 s of the scored window
    before = det.decision_function(model_data.pipeline.view(det.input_view, windows))
    after = det.decision_function(model_data.pipeline.view(det.input_view, spiked[-1:]))
    assert after[0] > before.max(), f"{name}: spike {after[0]:.3f} vs neighbours up to {before.max():.3f}"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_identical_scores(name, fitted, model_data, tmp_path):
    det = fitted[name]
    X = model_data.view(det, model_data.evaluation.sample(300, random_state=1))
    det.save(tmp_path / name)
    back = load_detector(tmp_path / name)
    assert type(back) is type(det) and back.get_params() == det.get_params()
    assert back.threshold_ == det.threshold_
    np.testing.assert_array_equal(back.decision_function(X), det.decision_function(X))


# The least AUROC separating clinical-episode seconds from normal seconds of unseen patients. It was 0.8 for every
# detector while the synthetic world was one narrow population and the models read absolute levels. Since issue
# #28 the normal patients are as wide as real ICU and operating-room ones (HR up to 122 is normal in the ICU,
# tachycardia is > 120) and the learned models read the patient's own changes, not levels (a level is the bedside
# rules' business): measured in this cohort with default settings, Isolation Forest 0.57, One-Class SVM 0.63, LSTM
# autoencoder 0.61 (0.72-0.77 over the first minutes of an episode). Catching the clinical kinds is the floor's job.
QUALITY_FLOOR = {"clinical": 0.8, "iforest": 0.55, "ocsvm": 0.55, "lstm_ae": 0.55}


@pytest.mark.parametrize("name", NAMES)
def test_quality_floor_on_clinical_episodes(name, fitted, model_data):
    """Clinical-episode seconds rank above normal seconds of unseen patients, above chance by QUALITY_FLOOR
    (subtle statistical anomalies are not part of this floor)."""
    det = fitted[name]
    ev = model_data.evaluation
    keep = (ev["artefact"] == 0) & ((ev["label"] == 0) | ev["anomaly_kind"].isin(CLINICAL))
    rows = ev[keep]
    y = rows["anomaly_kind"].isin(CLINICAL).to_numpy()
    assert y.sum() > 500 and (~y).sum() > 5000
    auroc = roc_auc_score(y, det.decision_function(model_data.view(det, rows)))
    assert auroc >= QUALITY_FLOOR[name], f"{name}: AUROC {auroc:.3f} on clinical episodes"


def test_clinical_baseline_reproduces_the_alarm_rules(fitted, model_data):
    det = fitted["clinical"]
    assert det.threshold_ == 0.0
    ev = model_data.evaluation
    alarms = det.predict(model_data.view(det, ev))
    # the rule fires from the second its minimum duration is reached; the label covers the run from its start
    fired = ev["alarm"].to_numpy()[alarms == 1]
    assert fired.mean() == 1.0, "an alarm of the baseline is always inside an alarm-rule event"
    assert alarms.sum() > 0.5 * ev["alarm"].sum()


def test_lstm_signal_errors_point_at_the_signal(fitted, model_data):
    det = fitted["lstm_ae"]
    ev = model_data.evaluation
    rows = ev[(ev["label"] == 0) & (ev["time_s"] >= model_data.pipeline.geometry.window_s)].head(5)  # signals read
    windows = windows_at(model_data.dataset.vitals, model_data.pipeline.signals, model_data.pipeline.geometry.window_s,
                         rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    spo2 = model_data.pipeline.signals.index("spo2")
    windows[:, spo2, -60:] = 75.0
    errors = det.signal_errors(model_data.pipeline.view("sequence", windows))
    assert errors.shape == (5, len(model_data.pipeline.signals))
    assert (errors.argmax(axis=1) == spo2).all()


def test_lstm_reports_every_epoch_to_callbacks(model_data, configs):
    """The hook an Optuna pruner uses: Keras callbacks passed to fit() see every epoch's losses."""
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, float(logs["val_loss"])))

    det = make_detector("lstm_ae", epochs=2, max_windows=1000, patience=5)
    det.fit(model_data.view(det, model_data.train), callbacks=[Record()])
    assert [e for e, _ in seen] == [0, 1]
    assert det.history_["val_loss"] == [v for _, v in seen]


@pytest.mark.parametrize("name", NAMES)
def test_same_params_same_scores(name, model_data, configs):
    params = {**detector_params(name, configs), **({"epochs": 2, "max_windows": 1000} if name == "lstm_ae" else {})}
    rows = model_data.evaluation.sample(200, random_state=2)
    scores = []
    for _ in range(2):
        det = make_detector(name, **params)
        det.fit(model_data.view(det, model_data.train))
        scores.append(det.decision_function(model_data.view(det, rows)))
    np.testing.assert_array_equal(scores[0], scores[1])


@pytest.mark.parametrize("name", NAMES)
def test_a_view_built_once_scores_as_the_rows(name, fitted, model_data):
    """`tune` builds its validation view once and scores it every trial (score_view): the numbers must be
    those `train` and `evaluate` get from the rows (score_rows), chunk boundaries included."""
    det = fitted[name]
    rows = model_data.evaluation.iloc[: SCORE_CHUNK + 300]
    by_rows = score_rows(det, model_data.pipeline, rows, model_data.dataset.vitals)
    assert len(by_rows) == len(rows) and np.ptp(by_rows[np.isfinite(by_rows)]) > 0
    np.testing.assert_array_equal(undefined_where_unread(det, rows, score_view(det, model_data.view(det, rows))),
                                  by_rows)


@pytest.mark.parametrize("name", NAMES)
def test_bundle_scores_raw_windows_like_the_stage_views(name, fitted, model_data, configs, root, tmp_path):
    """A bundle with its floor scores the feature table's rows (what `evaluate` does) as it scores raw windows (what
    the service does), after a save and load; a learned detector's score is its own on the common scale, never below
    the rules'."""
    from biostream.models.alarms import AlarmPolicy
    from biostream.models.bundle import ModelBundle
    from biostream.models.floor import Combination, SafetyParams, floor_key, floor_view_of_rows, learned_scale
    from biostream.models.technical import TechnicalChecks
    from biostream.models.training import combination_for, floor_template

    det = fitted[name]
    floor = floor_template(configs, SafetyParams(True, True, 1.0),
                           TechnicalChecks.from_yaml(root / "configs/technical.yaml"))
    comb = combination_for(det, floor)
    bundle = ModelBundle(model_data.pipeline, det, AlarmPolicy(3, 5, 120, 30), comb)
    bundle.save(tmp_path / "bundle")
    back = ModelBundle.load(tmp_path / "bundle")
    rows = model_data.evaluation.sample(40, random_state=4)
    windows = windows_at(model_data.dataset.vitals, model_data.pipeline.signals, model_data.pipeline.geometry.window_s,
                         rows["patient_id"].to_numpy(), rows["time_s"].to_numpy())
    by_rows = bundle.outputs_of_rows(rows.reset_index(drop=True), model_data.dataset.vitals)
    by_windows = back.outputs(windows)
    # `evaluate` shares one floor view among the bundles of the same floor: the same outputs as building its own
    same_floor = floor_key(comb, bundle.pipeline.signals) == floor_key(floor, bundle.pipeline.signals)
    assert same_floor == (comb.rules is not None)
    shared = floor_view_of_rows(floor, model_data.pipeline, rows.reset_index(drop=True), model_data.dataset.vitals)
    if same_floor:
        with_shared = bundle.outputs_of_rows(rows.reset_index(drop=True), model_data.dataset.vitals, shared)
        for field in ("score", "rule_driven", "technical", "rules"):
            np.testing.assert_array_equal(getattr(with_shared, field), getattr(by_rows, field))
    assert floor_key(Combination.plain(), bundle.pipeline.signals) != floor_key(floor, bundle.pipeline.signals)
    np.testing.assert_allclose(by_windows.score, by_rows.score, rtol=0, atol=1e-9)
    assert (by_windows.technical == by_rows.technical).all() and (by_windows.rule_driven == by_rows.rule_driven).all()
    learned = learned_scale(undefined_where_unread(det, rows, det.decision_function(model_data.view(det, rows))),
                            det.threshold_, comb.spread, comb.cap)
    if det.calibrated:  # a learned detector with the rules as its floor
        rules = floor.rules.decision_function(windows)
        np.testing.assert_allclose(by_windows.score, np.maximum(learned, rules), rtol=0, atol=1e-9)
        assert back.combination.rules is not None and back.window_s >= floor.reads_s
    else:  # the rules themselves: their own score, every alarm physiological
        np.testing.assert_allclose(by_windows.score, learned, rtol=0, atol=1e-9)
        assert back.combination.rules is None and not by_windows.technical.any()
    if det.calibrated:  # a model calibrated to add no alarm: the rules' outputs, without computing the model
        back.detector.set_threshold(np.inf)
        out, view, _ = back.outputs_and_view(windows)
        assert view.shape == (len(windows), 0)
        floor_only = ModelBundle(model_data.pipeline, floor.rules, AlarmPolicy(3, 5, 120, 30)).outputs(windows)
        np.testing.assert_array_equal(out.score, floor_only.score)
        np.testing.assert_array_equal(out.rules, floor_only.rules)
    frame = back.predict_frame(windows)
    assert list(frame.columns) == ["score", "alarm", "threshold", "technical"] and (frame["threshold"] == 0).all()
    assert ((frame["score"] > 0) == frame["alarm"].astype(bool)).all()
    with pytest.raises(FileNotFoundError, match="missing detector"):
        ModelBundle.load(tmp_path)


@pytest.mark.parametrize("name", ["iforest", "ocsvm"])
def test_per_signal_parts(name, model_data, tmp_path):
    """One model per signal (and one for the cross-signal features); a row's score is its highest part score on
    the common scale; the small-batch paths agree with scikit-learn's; a round trip keeps the scores; a row is
    explained by the part that scored it."""
    fast_params = {"iforest": {"n_estimators": 50}, "ocsvm": {"n_components": 50}}[name]
    groups = ("spread", "trend", "relative", "freshness", "context", "cross")  # the cross-signal part too
    det = make_detector(name, per_signal=True, random_state=0, feature_groups=groups, **fast_params)
    train = model_data.view(det, model_data.train)
    det.fit(train)
    n_signals = len(model_data.pipeline.signals)
    assert len(det.parts_) == n_signals + 1
    assert all(((cols // len(PER_SIGNAL)) == k).all() for k, cols in enumerate(det.parts_[:-1]))
    rows = model_data.evaluation.sample(300, random_state=5)
    X = model_data.view(det, rows)
    scores = det.decision_function(X)  # 300 rows: scikit-learn
    per_part = det._part_scores(X)
    if name == "iforest":  # each part is scikit-learn's forest (the One-Class SVM's numpy path: test_serving)
        raw = np.stack([-m.score_samples(X[:, c]) for m, c in zip(det.models_, det.parts_, strict=True)], axis=1)
        np.testing.assert_allclose(per_part, (raw - det.norms_[:, 0]) / det.norms_[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(scores, per_part.max(axis=1))
    small = np.concatenate([det.decision_function(X[i : i + 10]) for i in range(0, 60, 10)])  # the fast paths
    np.testing.assert_allclose(small, scores[:60], rtol=0, atol=1e-6)
    common = det._part_scores(train)  # each part's 1 % most unusual training rows score above 1
    np.testing.assert_allclose(np.quantile(common, 0.99, axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.median(common, axis=0), 0.0, atol=1e-6)
    # the training rows' scores come from fitting (not scored twice) and are what scoring them gives
    np.testing.assert_array_equal(det.train_scores_, det.decision_function(train))
    det.save(tmp_path / name)
    np.testing.assert_array_equal(load_detector(tmp_path / name).decision_function(X), scores)
    assert "_derived_cache" in det.__dict__  # the fast paths' derived models ... are rebuilt, never pickled
    copy = pickle.loads(pickle.dumps(det))
    assert "_derived_cache" not in copy.__dict__
    np.testing.assert_array_equal(copy.decision_function(X[:10]), det.decision_function(X[:10]))
    contributions = det.explain(X[:3])
    for i, k in enumerate(per_part[:3].argmax(axis=1)):
        outside = np.setdiff1d(np.arange(X.shape[1]), det.parts_[k])
        assert (contributions[i, outside] == 0).all() and np.abs(contributions[i, det.parts_[k]]).sum() > 0


@pytest.mark.parametrize("name", ["iforest", "ocsvm"])
def test_loads_a_detector_saved_before_per_signal_parts(name, fitted, model_data, tmp_path):
    """A registered champion saved by the previous code (one `model.skops`, `columns.json`, the SHAP background
    of the model's columns only) loads, scores and explains as before."""
    det = fitted[name]
    folder = tmp_path / name
    det.save(folder)
    (folder / "model_0.skops").rename(folder / "model.skops")
    (folder / "columns.json").write_text(json.dumps(det.parts_[0].tolist()))
    (folder / "parts.json").unlink()
    if name == "ocsvm":
        np.savez(folder / "shap_background.npz", data=det.background_[:, det.parts_[0]],
                 weights=det.background_weights_)
    old = load_detector(folder)
    X = model_data.view(det, model_data.evaluation.sample(20, random_state=6))
    np.testing.assert_array_equal(old.decision_function(X), det.decision_function(X))
    np.testing.assert_allclose(old.explain(X[:2]), det.explain(X[:2]), rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["iforest", "ocsvm", "lstm_ae"])
def test_what_a_study_suggests_fits_and_scores(name, model_data, root):
    """Hyperparameters as `tune` suggests them (from the repository's search space) fit and give finite scores
    that differ between normal and anomalous seconds."""
    import optuna

    from biostream.tuning.space import SearchSpace

    space = SearchSpace.from_yaml(root / f"configs/search_spaces/{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    fixed = {"epochs": 1, "max_windows": 500} if name == "lstm_ae" else {}
    train = model_data.train.sample(min(len(model_data.train), 1500), random_state=0)
    rows = model_data.evaluation.sample(300, random_state=4)
    for _ in range(2):
        det = make_detector(name, **{**space.suggest(study.ask()), **fixed})
        det.fit(model_data.view(det, train))
        scores = det.decision_function(model_data.view(det, rows))
        assert scores.shape == (300,) and np.isfinite(scores).all() and np.ptp(scores) > 0
