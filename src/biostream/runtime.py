"""Process set-up for entry points (stage CLIs, benchmarks). Nothing here runs at import."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

# Telemetry off and quiet TensorFlow by default (../shared/STACK.md); a user's own setting wins.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def configure(level: str | None = None) -> logging.Logger:
    """Set telemetry-off environment defaults and logging for a command-line entry point."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(
        level=(level or os.environ.get("BIOSTREAM_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    return logging.getLogger("biostream")


def progress_enabled() -> bool:
    """Progress bars on a terminal, off in CI and when output is captured."""
    return sys.stderr.isatty() and not os.environ.get("CI")


@contextmanager
def timed(log: logging.Logger, what: str) -> Iterator[dict[str, float]]:
    """Log how long a block took; the elapsed seconds are left in the yielded dict."""
    out: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        log.info("%s took %.2f s", what, out["seconds"])


def free_port() -> int:
    """A TCP port on loopback that is free now (for servers that tests and benchmarks start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
