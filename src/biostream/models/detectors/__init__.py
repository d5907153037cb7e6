"""Detectors behind one contract (`base.BaseDetector`) and a name -> class registry.

Each detector's module is imported on first use of its name (`detector_class`, `make_detector`,
`load_detector`): TensorFlow is imported only when the LSTM autoencoder is.
"""

from biostream.models.detectors.base import (
    NAMES,
    BaseDetector,
    detector_class,
    load_detector,
    make_detector,
    restore_params,
    score_rows,
    score_view,
    undefined_where_unread,
)

__all__ = ["NAMES", "BaseDetector", "detector_class", "load_detector", "make_detector", "restore_params",
           "score_rows", "score_view", "undefined_where_unread"]
