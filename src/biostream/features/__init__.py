"""Features: raw windows of vital signs -> what the detectors read.

* `windows`: the window geometry and windows cut from whole recordings;
* `kernel` / `compute`: the features of a window (one compiled pass per signal), their names and groups;
* `preprocess`: imputation and robust scaling fitted on training patients;
* `pipeline`: `InputPipeline`, raw windows -> a detector's input view (training, evaluation, serving);
* `featurize`: the feature table of a dataset (the `featurize` stage);
* `table`: the one loader of the `featurize` stage's folder.
"""

from biostream.features.compute import (
    CROSS,
    CROSS_SIGNALS,
    FEATURE_GROUPS,
    PER_SIGNAL,
    feature_names,
    feature_signal_weights,
    group_columns,
    sequence_view,
    window_features,
)
from biostream.features.featurize import META_COLUMNS, FeaturizeParams, featurize
from biostream.features.pipeline import InputPipeline
from biostream.features.preprocess import Preprocessor, feature_min_scale
from biostream.features.windows import WindowGeometry, iter_cohort_windows, recording_windows, windows_at

__all__ = [
    "CROSS", "CROSS_SIGNALS", "FEATURE_GROUPS", "META_COLUMNS", "PER_SIGNAL", "FeaturizeParams", "InputPipeline",
    "Preprocessor", "WindowGeometry", "feature_min_scale", "feature_names", "feature_signal_weights", "featurize",
    "group_columns", "iter_cohort_windows", "recording_windows", "sequence_view", "window_features", "windows_at",
]
