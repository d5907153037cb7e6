"""Search spaces, the validation objective's threshold, and tune params, on small inline data."""

from __future__ import annotations

import optuna
import pytest
import yaml

from biostream.core.config import ConfigError
from biostream.core.params import validate
from biostream.tuning.space import SearchSpace, TuneParams, decode
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["iforest", "ocsvm", "lstm_ae"])
def test_repository_search_spaces_suggest_valid_constructor_args(name):
    """Every suggested value reaches the detector's constructor as the type it takes, over several trials (TPE's
    first trials are random: they cover the choices); tests/model/test_detectors.py fits them."""
    from biostream.models.detectors import make_detector

    space = SearchSpace.from_yaml(ROOT / f"configs/search_spaces/{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    seen: dict[str, set] = {k: set() for k in space.specs}
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial)
        assert set(params) == set(space.specs)
        det = make_detector(name, **params)
        assert {k: det.get_params()[k] for k in params} == params
        for key, spec in space.specs.items():
            value = params[key]
            if spec["type"] == "int":
                assert isinstance(value, int) and spec["low"] <= value <= spec["high"]
            elif spec["type"] == "float":
                assert isinstance(value, float) and spec["low"] <= value <= spec["high"]
            elif key == "feature_groups":
                assert isinstance(value, tuple) and "+".join(value) in spec["choices"]
            else:
                assert value in spec["choices"]
            seen[key].add(str(value))
        study.tell(trial, 0.5)
    assert all(len(v) > 1 for k, v in seen.items()), f"12 trials tried one value only: {seen}"


def test_bad_search_space_is_named(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text(yaml.safe_dump({"nu": {"type": "uniform", "low": 0, "high": 1}}))
    with pytest.raises(ConfigError, match="nu.type: 'uniform' is not one of"):
        SearchSpace.from_yaml(bad)
    bad.write_text(yaml.safe_dump({"nu": {"type": "float", "low": 2, "high": 1}}))
    with pytest.raises(ConfigError, match="low is above high"):
        SearchSpace.from_yaml(bad)


def test_decode_feature_groups():
    assert decode({"feature_groups": "level+trend", "nu": 0.1}) == {"feature_groups": ("level", "trend"), "nu": 0.1}


def test_tune_params_are_checked(root):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert validate(params).tune.n_trials["ocsvm"] >= 1
    params["tune"]["n_trials"]["ocsvm"] = 0
    with pytest.raises(ConfigError, match="tune.n_trials.ocsvm: Input should be greater than 0"):
        validate(params)


def test_several_workers_need_a_database_server_and_a_heartbeat_below_its_grace(root):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tune"]["workers"] = 2  # on the default sqlite file
    with pytest.raises(ConfigError, match=r"several workers need a database server \(tune.storage: postgresql"):
        validate(params)
    params["tune"]["storage"] = "postgresql://postgres@127.0.0.1/optuna"
    assert validate(params).tune.workers == 2
    params["tune"].update(heartbeat_s=60, grace_s=30)
    with pytest.raises(ConfigError, match=r"tune: heartbeat_s \(60\) must be below grace_s \(30\)"):
        validate(params)
    params["tune"].update(heartbeat_s=10, workers=0)
    with pytest.raises(ConfigError, match="tune.workers: Input should be greater than 0"):
        validate(params)


def test_the_best_fitted_detector_is_kept_ties_to_the_earlier_trial(tmp_path):
    import json

    import numpy as np

    from biostream.features import feature_names
    from biostream.models.detectors import load_detector, make_detector
    from biostream.tuning.study import BestFitted, save_best_model

    X = np.random.default_rng(0).normal(size=(300, len(feature_names(("hr", "spo2"))))).astype(np.float32)
    kept, fitted = BestFitted(), {}
    for trial, value in ((0, 0.5), (1, 0.7), (2, 0.7), (3, 0.6)):
        fitted[trial] = make_detector("iforest", n_estimators=10 + trial, random_state=0).fit(X)
        kept.offer(trial, value, fitted[trial])
    assert kept.trial == 1  # Optuna's best_trial is the first of equals too
    assert save_best_model(tmp_path / "here", "study-x", 1, {"n_estimators": 11}, kept)
    meta = json.loads((tmp_path / "here/trial.json").read_text())
    assert meta == {"study": "study-x", "trial": 1, "params": {"n_estimators": 11}, "model": True, "note": None}
    again = load_detector(tmp_path / "here/detector")
    np.testing.assert_array_equal(again.decision_function(X[:20]), fitted[1].decision_function(X[:20]))
    np.testing.assert_array_equal(np.load(tmp_path / "here/train_scores.npy"), fitted[1].train_scores_)
    # the study's best trial ran in another worker: only the note, and train fits it again
    assert not save_best_model(tmp_path / "elsewhere", "study-x", 7, {"n_estimators": 11}, kept)
    assert not (tmp_path / "elsewhere/detector").exists()
    assert json.loads((tmp_path / "elsewhere/trial.json").read_text())["model"] is False


@pytest.mark.slow
def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_requeued(tmp_path):
    """A worker SIGKILLed right after it started a trial leaves it RUNNING with no heartbeat: Optuna never finds
    such a trial stale (a CI run waited on one until the study's timeout); `_settle` gives it a heartbeat, so it
    is failed `grace_s` later and re-queued with its parameters."""
    import time

    from optuna.trial import TrialState

    from biostream.tuning.study import _settle, open_storage

    tune = TuneParams(n_trials={"x": 1}, timeout_s=60, seed=0, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                      workers=1, heartbeat_s=1, grace_s=2, max_retry=3)
    storage = open_storage(tune)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = study.ask()  # what the killed worker left: RUNNING, never a heartbeat
    dead.suggest_float("a", 0.0, 1.0)
    time.sleep(tune.grace_s + 0.5)
    optuna.storages.fail_stale_trials(study)
    assert study.get_trials(states=(TrialState.RUNNING,)), "Optuna alone leaves it running"
    start = time.monotonic()
    _settle(study, storage, tune, deadline=start + 30)
    assert time.monotonic() - start < 10, "failed after grace_s, not at the deadline"
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == trials[0].number
