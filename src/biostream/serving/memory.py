"""A worker's memory cap: its data segment may grow `serve.worker_memory_mb` beyond what it holds once its model is
loaded (`cap`), so a request that needs more gets MemoryError, answered 413 (`biostream.serving.asgi`), and the
worker lives on: the kernel's out-of-memory killer would otherwise end it, and every request it held.

The cap is Linux's RLIMIT_DATA (the heap and private writable mappings: what numpy, Python objects and thread
stacks take); shared libraries and the model's read-only files are not counted. What a message takes is bounded
apart, by construction (`stream.max_message_bed_s`, docs/streams.md): the cap is the floor under a bug."""

from __future__ import annotations

import logging
import os
import resource
from pathlib import Path

MEMORY_ENV = "BIOSTREAM_WORKER_MEMORY_MB"  # overrides serve.worker_memory_mb where the service runs (0: no cap)
_log = logging.getLogger("biostream")


def data_bytes() -> int:
    """This process's data segment now (VmData, bytes)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmData in /proc/self/status")


def cap(extra_mb: int) -> int | None:
    """Cap this process's data segment at its size now plus `extra_mb` (BIOSTREAM_WORKER_MEMORY_MB wins; 0: no
    cap). The limit set, in bytes (None: none set, or the platform has no such limit)."""
    given = os.environ.get(MEMORY_ENV)
    if given is not None:
        extra_mb = int(given)
    if extra_mb <= 0:
        return None
    try:
        limit = data_bytes() + extra_mb * (1 << 20)
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (OSError, ValueError) as error:
        _log.warning("no memory cap for this worker (%s): a runaway request could end it", error)
        return None
    _log.info("worker memory cap: data segment at most %d MB (%d MB beyond its model)", limit >> 20, extra_mb)
    return limit
