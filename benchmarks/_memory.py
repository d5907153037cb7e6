"""Memory of a server's worker processes, sampled while a benchmark runs: resident set size (RSS) per worker, the
idle figure before and the peak during (`Watch`)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path


def children(pid: int) -> list[int]:
    """The processes `pid` started (a `bentoml serve`'s workers)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return sorted(out)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Watch:
    """Samples the RSS of processes every `every_s` while open (a server's workers: `Watch(children(pid))`);
    `peak` and `idle` per process (MB)."""

    def __init__(self, pids: list[int], every_s: float = 0.05) -> None:
        self.pids = list(pids)
        self.idle = {p: rss_mb(p) for p in self.pids}
        self.peak = dict(self.idle)
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for p in self.pids:
                with contextlib.suppress(OSError):  # a worker gone: its peak stands; `alive` says so
                    self.peak[p] = max(self.peak[p], rss_mb(p))
            time.sleep(self.every_s)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def alive(self) -> bool:
        return all(Path(f"/proc/{p}").exists() for p in self.pids)

    def summary(self) -> dict[str, object]:
        """Per worker: idle and peak RSS (MB) and the peak above idle; the largest rise."""
        workers = {str(p): {"idle_mb": round(self.idle[p]), "peak_mb": round(self.peak[p]),
                            "above_idle_mb": round(self.peak[p] - self.idle[p])} for p in self.pids}
        return {"workers": workers, "max_above_idle_mb": max(w["above_idle_mb"] for w in workers.values()),
                "workers_alive": self.alive()}
