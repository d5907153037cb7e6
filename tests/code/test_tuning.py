"""Search spaces, the validation objective's threshold, and tune params, on small inline data."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from biostream.config import ConfigError
from biostream.evaluation import AlarmPolicy
from biostream.tuning import SearchSpace, TuneParams, Validation, best_event_threshold, decode
from tests.conftest import ROOT


@pytest.mark.parametrize("name", ["iforest", "ocsvm", "lstm_ae"])
def test_repository_search_spaces_suggest_valid_constructor_args(name):
    from biostream.detectors import make_detector

    space = SearchSpace.from_yaml(ROOT / f"configs/search_spaces/{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    params = space.suggest(study.ask())
    det = make_detector(name, **params)
    assert det.get_params()[next(iter(params))] == params[next(iter(params))]
    if "feature_groups" in params:
        assert isinstance(params["feature_groups"], tuple)


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


def test_best_event_threshold_finds_the_separating_score():
    n = 3600
    rows = pd.DataFrame({"patient_id": "p", "time_s": np.arange(n), "label": 0})
    rows.loc[1000:1099, "label"] = 1
    events = pd.DataFrame({"patient_id": ["p"], "start_s": [1000], "end_s": [1100], "kind": ["hypotension"],
                           "category": ["clinical"]})
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1, n)
    scores[1000:1100] += 6  # the event stands out; noise alone crosses low thresholds often
    val = Validation(rows, events)
    policy = AlarmPolicy(k=3, n=5, refractory_s=60, tolerance_s=30)
    thr = best_event_threshold(scores, lambda t: val.event_scores(scores, t, policy, True))
    m = val.event_scores(scores, thr, policy, True)
    assert m["event_recall"] == 1.0 and m["false_alarms"] == 0


def test_tune_params_are_checked(root):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert TuneParams.from_params(params).objective == "event_f1"
    params["tune"]["objective"] = "accuracy"
    with pytest.raises(ConfigError, match="objective: 'accuracy' is not one of"):
        TuneParams.from_params(params)
