"""`forest_kernel.FlatForest` gives scikit-learn's Isolation Forest scores to the bit, on every path: feature
subsets or not, missing values in training or scoring, one row, blocks of rows, batches split over threads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import IsolationForest

from biostream.models.detectors import forest_kernel
from biostream.models.detectors.forest_kernel import BLOCK_ROWS, FlatForest


def _data(n: int, f: int, seed: int, nan_fraction: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_t(3, size=(n, f)) * rng.uniform(0.1, 10, f)
    X[rng.random(X.shape) < nan_fraction] = np.nan
    return X


@pytest.mark.parametrize(("max_features", "max_samples", "train_nan"), [
    (1.0, 256, 0.0),  # every tree reads all columns (scikit-learn skips the subset copy)
    (0.4, 512, 0.0),  # each tree its own feature subset
    (0.7, "auto", 0.05),  # missing values in training: trees learn where a NaN goes
])
def test_scores_equal_scikit_learn(max_features, max_samples, train_nan):
    X = _data(3000, 9, seed=1, nan_fraction=train_nan)
    forest = IsolationForest(n_estimators=60, max_samples=max_samples, max_features=max_features,
                             random_state=3).fit(X)
    flat = FlatForest.of(forest)
    Y = np.concatenate([_data(BLOCK_ROWS + 77, 9, seed=2, nan_fraction=0.03), X[:50] * 3.0])
    expected = -forest.score_samples(Y)
    assert np.ptp(expected) > 0.05  # scores differ, so equality below means something
    np.testing.assert_array_equal(flat.anomaly_scores(Y), expected)
    np.testing.assert_array_equal(flat.anomaly_scores(Y[:1]), expected[:1])
    np.testing.assert_array_equal(flat.anomaly_scores(Y[5:6].astype(np.float32)), expected[5:6])


def test_large_batches_split_over_threads_give_the_same_scores(monkeypatch):
    X = _data(2000, 5, seed=4)
    forest = IsolationForest(n_estimators=30, max_samples=300, max_features=0.6, random_state=0).fit(X)
    Y = _data(5000, 5, seed=5)
    expected = -forest.score_samples(Y)
    monkeypatch.setattr(forest_kernel, "THREAD_ROWS", 1000)  # several threads' worth of rows
    monkeypatch.setattr(forest_kernel.os, "cpu_count", lambda: 3)
    np.testing.assert_array_equal(FlatForest.of(forest).anomaly_scores(Y), expected)


def test_a_forest_of_one_sample_scores_as_scikit_learn():
    X = _data(1, 4, seed=6)
    forest = IsolationForest(n_estimators=5, random_state=0).fit(X)
    Y = _data(10, 4, seed=7)
    np.testing.assert_array_equal(FlatForest.of(forest).anomaly_scores(Y), -forest.score_samples(Y))


def test_rows_of_the_wrong_width_are_refused():
    forest = IsolationForest(n_estimators=5, random_state=0).fit(_data(100, 4, seed=8))
    with pytest.raises(ValueError, match="expected rows of 4 features, got shape"):
        FlatForest.of(forest).anomaly_scores(np.zeros((3, 5)))
