"""Detectors behind one contract (`base.BaseDetector`) and a name -> class registry.

Importing this package registers every detector; TensorFlow is imported only when the LSTM autoencoder
is fitted or loaded.
"""

from biostream.detectors import clinical, iforest, lstm_ae, ocsvm  # noqa: F401  (registration)
from biostream.detectors.base import REGISTRY, BaseDetector, load_detector, make_detector

__all__ = ["REGISTRY", "BaseDetector", "load_detector", "make_detector"]
