"""BioStream: anomaly detection on patients' vital signs, from DVC stages to a BentoML service."""

__version__ = "0.1.0"
