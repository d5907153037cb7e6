from __future__ import annotations

import numpy as np
import pytest

from biostream.core.config import ConfigError
from biostream.features import feature_names
from biostream.models.calibration import ThresholdParams, calibrate
from biostream.models.detectors import make_detector


def test_alarm_rate_threshold():
    scores = np.arange(1000.0)
    t = calibrate(scores, None, ThresholdParams("alarm_rate", 0.05))
    assert np.mean(scores > t) == pytest.approx(0.05, abs=0.002)


def test_best_f1_separates_when_it_can():
    scores = np.r_[np.linspace(0, 1, 90), np.linspace(2, 3, 10)]
    labels = np.r_[np.zeros(90), np.ones(10)]
    t = calibrate(scores, labels, ThresholdParams("best_f1", 0.01))
    assert ((scores > t) == labels.astype(bool)).all()


def test_best_f1_needs_both_classes_and_params_are_checked():
    with pytest.raises(ValueError, match="both classes"):
        calibrate(np.arange(5.0), np.zeros(5), ThresholdParams("best_f1", 0.01))
    with pytest.raises(ConfigError, match="method: 'youden' is not one of"):
        ThresholdParams.from_params({"threshold": {"method": "youden", "target_alarm_rate": 0.01}})
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\)"):
        ThresholdParams.from_params({"threshold": {"method": "alarm_rate", "target_alarm_rate": 2}})


def test_calibrated_threshold_drives_predict():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (300, len(feature_names(("hr", "spo2"))))).astype(np.float32)
    det = make_detector("iforest", n_estimators=20).fit(X)
    provisional = det.threshold_
    assert np.mean(det.decision_function(X) > provisional) == pytest.approx(0.01, abs=0.005)
    t = calibrate(det.decision_function(X), None, ThresholdParams("alarm_rate", 0.2))
    det.set_threshold(t)
    assert det.predict(X).mean() == pytest.approx(0.2, abs=0.01)
    with pytest.raises(ValueError, match="finite"):
        det.set_threshold(float("nan"))
