"""An alarm episode explained from the stream store: the window that opened it (its first second and the
`window_s` before it, as stored) explained as `POST /explain` explains a window (`Scorer.explain`). The bed page
and the case report show it; `GET /beds/<bed>/episodes/<start>/explain` answers it."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np


def stored_window(store: Any, bed: str, last: int, window_s: int, n_signals: int) -> np.ndarray:
    """(S, window_s) values of a bed's seconds up to `last` as stored (NaN where none was)."""
    out = np.full((n_signals, window_s), np.nan)
    first = last - window_s + 1
    for t, vals in store.stored_values(bed, first, last).items():
        out[:, t - first] = vals
    return out


def explain_episode(store: Any, scorer: Any, bed: str, start: int) -> dict[str, Any]:
    """What drove the window that opened the bed's episode at `start`: driver (model or rules), method, top
    signals and per-signal contributions, the score and the model."""
    spec = scorer.spec
    window = stored_window(store, bed, start, spec.window_s, len(spec.signals))
    answer = scorer.explain(SimpleNamespace(array=window, patient_id=bed, time=datetime.fromtimestamp(start, UTC)))
    return {"driver": answer.driver, "method": answer.method, "top_signals": list(answer.top_signals),
            "signals": {k: float(v) for k, v in answer.signals.items()}, "score": float(answer.score),
            "threshold": float(answer.threshold), "alarm_class": answer.alarm_class,
            "model": answer.model.model_dump()}
