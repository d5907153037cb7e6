"""A bed's case report from the stream store (`biostream.reporting.case` draws and writes it): its stored seconds
over a period and the episodes that overlap it, each read as the API answers it (`answers.episode_answer`, the one
reader of a stored episode) and explained as `GET /beds/<bed>/episodes/<start>/explain` explains it."""

from __future__ import annotations

from typing import Any

import numpy as np

from biostream.reporting.case import Case, CaseEpisode, make_case
from biostream.reporting.explain import explain_episode
from biostream.serving.scorer import Scorer
from biostream.serving.streaming.answers import episode_answer
from biostream.serving.streaming.openapi import StreamEpisode


def case_of_bed(store: Any, scorer: Scorer, bed: str, since: int, until: int, explain: bool = True) -> Case:
    """A bed's case from the stream store, [since, until)."""
    rows = store.seconds(bed, since, until, limit=until - since)
    signals = tuple(scorer.spec.signals)
    times = np.array([r["second"] for r in rows], dtype=np.int64)
    values = (np.vstack([np.frombuffer(r["vals"], dtype=np.float64) for r in rows]) if rows
              else np.empty((0, len(signals))))
    scores = np.array([r["score"] for r in rows], dtype=np.float64)
    episodes = []
    for rec in store.episodes(bed, since=since, limit=10_000):
        if rec["start"] >= until:
            continue
        e = StreamEpisode.model_validate(episode_answer(rec))  # as GET /beds/<bed>/episodes answers it
        # a condition not read from the signals (the bed's data refused) and an advisory have no alarm to explain
        why = explain and not e.reason and e.alarm_class != "advisory"
        explanation = explain_episode(store, scorer, bed, rec["start"]) if why else None
        episodes.append(CaseEpisode.of(e, last_on=rec["last_on"], explanation=explanation))
    return make_case(bed, "bed", since, until, scorer, times, values, scores, episodes)
