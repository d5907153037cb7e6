"""The name under which models logged before the package had subpackages pickled their pyfunc class: loading
such a model imports `biostream.pyfunc.VitalsPyfunc`. New code imports `biostream.tracking.pyfunc`."""

from biostream.tracking.pyfunc import VitalsPyfunc, log_bundle, signature

__all__ = ["VitalsPyfunc", "log_bundle", "signature"]
