"""`params.yaml: stream`: the bedside-stream settings the service carries (in its serving spec); the section's type is
`biostream.core.params.StreamParams`."""

from __future__ import annotations

from biostream.core.params import REDIS_ENV, STORE_ENV, StreamParams  # noqa: F401 (re-exported)
