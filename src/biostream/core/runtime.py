"""Process set-up for entry points (stage CLIs, benchmarks). Nothing here runs at import."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUIET_ENV_FILE = Path(__file__).with_name("quiet.env")


def quiet_env(path: Path = QUIET_ENV_FILE) -> dict[str, str]:
    """The environment defaults of `quiet.env` (telemetry off, quiet TensorFlow): the one place they are set."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path}: '{line}' is not KEY=value")
            out[key.strip()] = value.strip()
    return out


CHATTY_LOGGERS = ("shap",)


def configure(level: str | None = None) -> logging.Logger:
    """Set telemetry-off environment defaults and logging for a command-line entry point."""
    for key, value in quiet_env().items():
        os.environ.setdefault(key, value)
    logging.basicConfig(
        level=(level or os.environ.get("BIOSTREAM_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for name in CHATTY_LOGGERS:  # their INFO is per-call detail (kernel SHAP logs every row's solution)
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
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
