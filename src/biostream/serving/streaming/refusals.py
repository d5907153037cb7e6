"""No silent refusal: a bed whose data the service refuses is not a calm bed. Seconds dated ahead of the server's
clock are refused (`within_clock`); a bed whose data a message refused, and of which it stored no new second, gets
the technical condition "no valid data from this bed" (`refuse`): an open technical episode with its reason, cyan
on the board, in `/alarms` and the case report, until the bed's data is read again (`StreamEngine._writes` ends it)
or no refusal has come for `silent_s` (`end_stale`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from biostream.data.schema import TECHNICAL
from biostream.serving.streaming.answers import BedAnswer, Chunk, Problem, Problems, episode_row, iso

if TYPE_CHECKING:
    from biostream.serving.streaming.engine import StreamEngine

REASON = "no valid data from this bed"
_log = logging.getLogger("biostream")


def within_clock(chunks: Sequence[Chunk], now: float, skew_s: int) -> tuple[list[Chunk], list[Problem]]:
    """The chunks cut at `now + skew_s` (a later second would become the bed's newest, and every true second after
    it a late one), and a refusal naming the skew for each cut."""
    last = int(now) + skew_s
    kept, problems = [], []
    for c in chunks:
        m = c.values.shape[1]
        if c.start + m - 1 <= last:
            kept.append(c)
            continue
        n_ok = max(0, last - c.start + 1)
        ahead = c.start + n_ok
        problems.append(Problem(
            c.index, c.bed, "start", iso(ahead), f"at most stream.max_skew_s = {skew_s} s after the server's clock",
            f"{m - n_ok} second(s) of bed {c.bed!r} from {iso(ahead)} are {ahead - int(now)} s ahead of the "
            f"server's clock ({iso(int(now))}), more than stream.max_skew_s = {skew_s} s: not stored. Check the "
            f"gateway's clock (NTP)", "the item's earlier seconds" if n_ok else "nothing of this item", refused=True))
        if n_ok:
            kept.append(Chunk(c.bed, c.start, c.values[:, :n_ok], c.index))
    return kept, problems


def refused_beds(problems: Problems, answers: Sequence[BedAnswer]) -> dict[str, str]:
    """The beds whose values `problems` refused and of which no new second was stored, with the first reason."""
    stored = {a.bed for a in answers if a.seconds}
    return {bed: f"{REASON}: {why}"[:200] for bed, why in problems.refused_beds.items() if bed not in stored}


def refuse(engine: StreamEngine, problems: Problems, answers: Sequence[BedAnswer], now: float) -> None:
    """Open (or refresh) the condition "no valid data" of each bed whose data this message refused and none
    stored. A store that refuses the write is logged: the refusal itself was answered."""
    beds = refused_beds(problems, answers)
    if not beds:
        return
    try:
        _refuse(engine, beds, now)
    except Exception:
        for bed in beds:
            engine.beds.pop(bed, None)
        _log.exception("the condition 'no valid data' of %d bed(s) could not be stored", len(beds))


def _refuse(engine: StreamEngine, beds: dict[str, str], now: float) -> None:
    second = int(now)
    taken = engine.store.episode_starts(beds, second - 60)
    with engine.store.transaction(beds, known=()) as tx:
        opened, refreshed, marks = [], [], []
        for bed, reason in sorted(beds.items()):
            since = tx.rows[bed].refused_since
            if since is not None:
                refreshed.append((second, reason, bed, since))
                continue
            start = second
            while (bed, start) in taken:  # an episode of the signals started this second: the one before
                start -= 1
            opened.append(episode_row(bed, start, None, second, TECHNICAL, now, engine.model_version, signals=[],
                                      reason=reason))
            marks.append((start, bed))
        if opened:
            tx.write([], [], [], opened, acks=engine._acks)
            tx.refused(marks)
        if refreshed:
            q = engine.store.mark
            tx.cursor.executemany(f'UPDATE stream_episodes SET last_on = {q}, reason = {q} '
                                  f"WHERE bed = {q} AND start = {q} AND kind = '' AND \"end\" IS NULL", refreshed)
    for bed in beds:
        engine.beds.pop(bed, None)  # its version moved: read again when it next sends


def end_stale(engine: StreamEngine, now: float) -> int:
    """End the conditions "no valid data" of beds from which no refused message has come for `silent_s`; how many."""
    stale = engine.store.stale_conditions(int(now) - engine.params.silent_s)
    if not stale:
        return 0
    beds = sorted({b for b, _ in stale})
    with engine.store.transaction(beds, known=beds) as tx:
        ended = [(int(now), now, b, start) for b, start in stale]
        tx.end_conditions(ended)
        tx.refused([(None, b) for b, start in stale if tx.rows[b].refused_since == start])
    for bed in beds:
        engine.beds.pop(bed, None)
    return len(stale)
