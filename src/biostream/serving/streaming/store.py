"""Where a stream's decisions are kept: every scored second, every alarm episode, and each bed's state, in one
SQL database: sqlite by default (a file, no server), PostgreSQL by URL (`postgresql+psycopg://...`).

Exactly once: a batch's seconds, episodes and bed states are written in one transaction (`Store.transaction`), and
a second is a primary key (bed, second): a batch that dies before its commit leaves nothing, and one that committed
is a no-op when it comes again (its seconds are there: repeats). The Redis path keeps each batch's result message
in its commit too (the outbox, `stream_outbox`) until it is published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from biostream.serving.database.migrate import ensure
from biostream.serving.streaming.tables import (
    _PG_SECONDS,
    BEDS,
    EPISODE_COLUMNS,
    EPISODES,
    OUTBOX,
    SECONDS,
    SECONDS_COLUMNS,
)


@dataclass
class BedRow:
    bed: str
    version: int
    last_second: int | None
    last_arrival: float | None
    state_json: str | None = None  # parsed only when the engine has no current copy of the bed (`state`)
    refused_since: int | None = None  # its open condition "no valid data" (`StreamEngine.refuse`)

    @property
    def state(self) -> dict[str, Any] | None:
        return None if self.state_json is None else json.loads(self.state_json)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path)}"


class Store:
    """The stream store at `url`, at this version's schema (`biostream.serving.database.migrate.ensure`)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        if self.sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
            sa.event.listen(self.engine, "connect", _sqlite_connect)
            sa.event.listen(self.engine, "connect",
                            lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA wal_autocheckpoint=0"))  # checkpoint()
            sa.event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
            self.reader = sa.create_engine(url, connect_args={"timeout": 60})  # reads take no write lock
            sa.event.listen(self.reader, "connect", _sqlite_connect)
        else:
            self.engine = self.reader = sa.create_engine(url, pool_pre_ping=True)
        ensure(url)
        self._insert = (sqlite if self.sqlite else postgresql).insert
        self.mark = "?" if self.sqlite else "%s"  # the driver's placeholder (sqlite3: qmark; psycopg: format)


    def dispose(self) -> None:
        self.engine.dispose()
        self.reader.dispose()

    @contextmanager
    def transaction(self, beds: Iterable[str], known: Iterable[str] = (), states: bool = True
                    ) -> Iterator[Transaction]:
        """One write transaction holding the given beds until it commits (sqlite: the database's write lock,
        `BEGIN IMMEDIATE`; PostgreSQL: `SELECT ... FOR UPDATE` on their rows); those not among `known` (beds the
        store was seen to have: a bed row is never deleted) are created if new. `states`: read their stored
        alarm states too (not needed to check versions).

        Each bed row carries a version that every write increments: the engine scores before it takes the lock,
        from the versions it read, and checks them here; if another process (or an earlier life of this one) wrote
        a bed meanwhile, it reloads and scores again (`StreamEngine.ingest`)."""
        beds = sorted(set(beds))
        new = sorted(set(beds) - set(known))
        with self.engine.begin() as conn:
            if new:
                conn.execute(self._insert(BEDS).on_conflict_do_nothing(), [{"bed": b, "version": 0} for b in new])
            yield Transaction(self, conn, beds, states)

    # ---- reads (GET endpoints, tests)
    def seconds(self, bed: str, since: int | None = None, until: int | None = None,
                limit: int = 3600) -> list[dict[str, Any]]:
        """A bed's scored seconds in [since, until), newest `limit` of them, oldest first."""
        q = sa.select(SECONDS).where(SECONDS.c.bed == bed)
        if since is not None:
            q = q.where(SECONDS.c.second >= since)
        if until is not None:
            q = q.where(SECONDS.c.second < until)
        with self.reader.connect() as conn:
            rows = conn.execute(q.order_by(SECONDS.c.second.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in reversed(rows)]

    def episodes(self, bed: str | None = None, since: int | None = None, open_only: bool = False,
                 limit: int = 1000) -> list[dict[str, Any]]:
        q = sa.select(EPISODES)
        if bed is not None:
            q = q.where(EPISODES.c.bed == bed)
        if since is not None:
            q = q.where(sa.or_(EPISODES.c.end.is_(None), EPISODES.c.end > since))
        if open_only:
            q = q.where(EPISODES.c.end.is_(None))
        with self.reader.connect() as conn:
            rows = conn.execute(q.order_by(EPISODES.c.start.desc()).limit(limit)).mappings().all()
        return [dict(r) for r in reversed(rows)]

    def acknowledge(self, bed: str, start: int, key_id: str, now: float,
                    kind: str = "") -> tuple[dict[str, Any] | None, bool]:
        """Record that `key_id` acknowledged the bed's episode that started at `start` (an alarm; `kind`: the
        advisory of that rule kind), with its peak score then (the acknowledgement holds until it lapses or the
        episode worsens: `Transaction.write`; while it holds, a second one changes nothing). The episode (None if the
        bed has none such), and whether this changed it."""
        which = (EPISODES.c.bed == bed, EPISODES.c.start == start, EPISODES.c.kind == kind)
        with self.engine.begin() as conn:
            done = conn.execute(EPISODES.update().where(*which, EPISODES.c.acked_at.is_(None))
                                .values(acked_at=now, acked_by=key_id, acked_peak=EPISODES.c.peak_score)).rowcount
            row = conn.execute(sa.select(EPISODES).where(*which)).mappings().first()
        return (None, False) if row is None else (dict(row), bool(done))

    def bed_rows(self, beds: Iterable[str]) -> dict[str, BedRow]:
        """The stored rows of these beds (those the store has), read without a lock."""
        beds, out = sorted(set(beds)), {}
        with self.reader.connect() as conn:
            for i in range(0, len(beds), 1000):
                for r in conn.execute(sa.select(BEDS).where(BEDS.c.bed.in_(beds[i:i + 1000]))).mappings():
                    out[r["bed"]] = _bed_row(r)
        return out

    def recent_values(self, bed: str, last_second: int, window_s: int) -> list[tuple[int, np.ndarray]]:
        """The stored values of a bed's last `window_s` seconds up to `last_second`."""
        q = sa.select(SECONDS.c.second, SECONDS.c.vals).where(
            SECONDS.c.bed == bed, SECONDS.c.second > last_second - window_s, SECONDS.c.second <= last_second)
        with self.reader.connect() as conn:
            return [(int(t), np.frombuffer(v, dtype=np.float64)) for t, v in conn.execute(q)]

    def newest_seconds(self, beds: Iterable[str]) -> dict[str, int]:
        """The newest stored second of each of these beds that has one (read without a lock)."""
        beds, out = sorted(set(beds)), {}
        with self.reader.connect() as conn:
            for i in range(0, len(beds), 1000):
                q = sa.select(SECONDS.c.bed, sa.func.max(SECONDS.c.second)).where(
                    SECONDS.c.bed.in_(beds[i:i + 1000])).group_by(SECONDS.c.bed)
                out.update((b, int(t)) for b, t in conn.execute(q))
        return out

    def first_second(self, bed: str, since: int) -> int | None:
        """The oldest stored second of a bed at or after `since` (None: none)."""
        q = sa.select(sa.func.min(SECONDS.c.second)).where(SECONDS.c.bed == bed, SECONDS.c.second >= since)
        with self.reader.connect() as conn:
            first = conn.execute(q).scalar()
        return None if first is None else int(first)

    def stored_values(self, bed: str, first: int, last: int) -> dict[int, np.ndarray]:
        """The stored values of a bed's seconds in [first, last] (those stored), by second."""
        q = sa.select(SECONDS.c.second, SECONDS.c.vals).where(
            SECONDS.c.bed == bed, SECONDS.c.second >= first, SECONDS.c.second <= last)
        with self.reader.connect() as conn:
            return {int(t): np.frombuffer(v, dtype=np.float64) for t, v in conn.execute(q)}

    def stale_conditions(self, before: int) -> list[tuple[str, int]]:
        """The open conditions "no valid data" last refreshed before second `before`: (bed, start) each."""
        q = sa.select(EPISODES.c.bed, EPISODES.c.start).where(
            EPISODES.c.end.is_(None), EPISODES.c.reason.is_not(None), EPISODES.c.kind == "",
            EPISODES.c.last_on < before)
        with self.reader.connect() as conn:
            return [(b, int(t)) for b, t in conn.execute(q)]

    def episode_starts(self, beds: Iterable[str], since: int) -> set[tuple[str, int]]:
        """(bed, start) of these beds' alarms and conditions (not advisories) that started at or after `since`."""
        beds = sorted(set(beds))
        q = sa.select(EPISODES.c.bed, EPISODES.c.start).where(EPISODES.c.bed.in_(beds), EPISODES.c.start >= since,
                                                              EPISODES.c.kind == "")
        with self.reader.connect() as conn:
            return {(b, int(t)) for b, t in conn.execute(q)}

    def beds_with_seconds(self, since: int, until: int) -> list[str]:
        """The beds with a stored second in [since, until) (monitoring)."""
        q = sa.select(SECONDS.c.bed).where(SECONDS.c.second >= since, SECONDS.c.second < until).distinct()
        with self.reader.connect() as conn:
            return [r[0] for r in conn.execute(q)]

    def board_rows(self) -> list[tuple[str, int | None, float | None]]:
        """Every bed's (id, newest second, last arrival), for the board (no alarm state read)."""
        q = sa.select(BEDS.c.bed, BEDS.c.last_second, BEDS.c.last_arrival)
        with self.reader.connect() as conn:
            return [(b, None if t is None else int(t), a) for b, t, a in conn.execute(q)]

    def newest_rows(self, beds: Sequence[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        """The stored second (values and score) of each (bed, second) given, by bed: one primary-key lookup each
        (a row-value IN list is not planned on the key by sqlite: it scanned)."""
        q = (f"SELECT bed, second, vals, score FROM stream_seconds WHERE bed = {self.mark} AND second = {self.mark}")
        out: dict[str, dict[str, Any]] = {}
        with self.reader.connect() as conn:
            cursor = conn.connection.cursor()
            for bed, second in beds:
                cursor.execute(q, (bed, second))
                row = cursor.fetchone()
                if row is not None:
                    out[row[0]] = {"bed": row[0], "second": int(row[1]), "vals": bytes(row[2]), "score": row[3]}
        return out

    def beds(self) -> list[BedRow]:
        with self.reader.connect() as conn:
            return [_bed_row(r) for r in conn.execute(sa.select(BEDS).order_by(BEDS.c.bed)).mappings()]

    def count_seconds(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(SECONDS)).scalar_one())

    def checkpoint(self) -> None:
        """sqlite: copy the write-ahead log into the database (PASSIVE: it waits for no one). Writers do not
        (`wal_autocheckpoint` off: a checkpoint inside an ingest's commit stalled that ingest); the service's
        sweeper and the consumers call this every few seconds. PostgreSQL: nothing to do."""
        if self.sqlite:
            with self.reader.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")

    def published(self, ids: Sequence[int]) -> None:
        """The outbox's messages `ids` were published: delete them."""
        if ids:
            with self.engine.begin() as conn:
                conn.execute(sa.delete(OUTBOX).where(OUTBOX.c.id.in_(list(ids))))

    @contextmanager
    def unpublished(self, before: float, limit: int = 100) -> Iterator[list[tuple[int, str]]]:
        """The outbox's messages of batches committed before `before` (wall clock) and still not published: their
        process died between its commit and its publish. Deleted when the block ends without an error (the caller
        published them); PostgreSQL: rows another process is republishing are skipped, not waited for."""
        q = sa.select(OUTBOX.c.id, OUTBOX.c.message).where(OUTBOX.c.created_at < before).order_by(OUTBOX.c.id)
        q = q.limit(limit) if self.sqlite else q.limit(limit).with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            rows = [(int(i), m) for i, m in conn.execute(q)]
            yield rows
            if rows:
                conn.execute(sa.delete(OUTBOX).where(OUTBOX.c.id.in_([i for i, _ in rows])))

    def silent_beds(self, before: float, limit: int | None = None) -> list[str]:
        """Beds with a recording whose last message came before `before` (wall clock), the longest silent first
        (at most `limit`)."""
        q = (sa.select(BEDS.c.bed).where(BEDS.c.last_second.is_not(None), BEDS.c.last_arrival < before)
             .order_by(BEDS.c.last_arrival, BEDS.c.bed).limit(limit))
        with self.reader.connect() as conn:
            return [r[0] for r in conn.execute(q)]


class Transaction:
    """The beds of one write transaction (`Store.transaction`)."""

    def __init__(self, store: Store, conn: sa.Connection, beds: Sequence[str], states: bool = True) -> None:
        self.store, self.conn = store, conn
        # the driver's own cursor, in this transaction: SQLAlchemy's per-row processing cost more than the
        # database for a batch of thousands of beds (statements here are plain SQL that sqlite and PostgreSQL share)
        self.cursor = conn.connection.cursor()
        self.rows: dict[str, BedRow] = {}
        cols = "bed, version, last_second, last_arrival, refused_since" + (", state" if states else "")
        if store.sqlite:  # the transaction holds the database's write lock
            parts = [tuple(beds[i:i + 1000]) for i in range(0, len(beds), 1000)]
            queries = [(f"SELECT {cols} FROM stream_beds WHERE bed IN ({self._marks(len(p))})", p) for p in parts]
        else:  # one array parameter (psycopg is slow to split a query of many placeholders); locked in one order
            queries = [(f"SELECT {cols} FROM stream_beds WHERE bed = ANY(%s) ORDER BY bed FOR UPDATE", (list(beds),))]
        for query, args in queries:
            self.cursor.execute(query, args)
            for r in self.cursor.fetchall():
                self.rows[r[0]] = BedRow(r[0], int(r[1]), None if r[2] is None else int(r[2]), r[3],
                                         r[5] if states else None, None if r[4] is None else int(r[4]))

    def _marks(self, n: int) -> str:
        return ", ".join([self.store.mark] * n)

    def write(self, beds: Sequence[dict[str, Any]], seconds: Sequence[Sequence[Any]],
              merged: Sequence[dict[str, Any]], episodes: Sequence[dict[str, Any]], ended: Sequence[tuple] = (), *,
              acks: tuple[float, float]) -> None:
        """Bed rows (bed, last_second, last_arrival, state: JSON text, refused_since; each row's version is
        incremented), new seconds (sequences in the order of SECONDS' columns), late values merged into stored
        seconds (bed, second, vals), and episodes (inserted or updated; an acknowledged one still open stops being
        acknowledged once `acks[0]` seconds have passed (stream.ack_silence_s), or once its peak rose `acks[1]`
        above the peak it was acknowledged at (stream.ack_worsening): it alarms again, and says why); `ended`: open
        conditions "no valid data" that end, (end second, wall clock, bed, start)."""
        q, cur = self.store.mark, self.cursor
        if seconds and not self.store.sqlite:  # PostgreSQL: binary COPY (executemany: 7x slower, arrays: 2.5x)
            with cur.copy(f"COPY stream_seconds ({', '.join(SECONDS_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(_PG_SECONDS)
                for row in seconds:
                    copy.write_row(row)
        elif seconds:
            cur.executemany(f"INSERT INTO stream_seconds ({', '.join(SECONDS_COLUMNS)}) "
                            f"VALUES ({self._marks(len(SECONDS_COLUMNS))})", seconds)
        if merged:
            cur.executemany(f"UPDATE stream_seconds SET vals = {q} WHERE bed = {q} AND second = {q}",
                            [(m["vals"], m["bed"], m["second"]) for m in merged])
        if episodes:
            cols = EPISODE_COLUMNS
            quoted = ", ".join('"' + c + '"' for c in cols)  # "end" is an SQL keyword
            kept = ("bed", "start", "kind", "opened_at", "model_version")  # kept by an update: when, by which model
            # `opened_at` of an episode written is the batch's clock (an update keeps the stored one)
            lapsed = f"excluded.opened_at - e.acked_at >= {float(acks[0])!r}"
            worse = f"excluded.peak_score >= e.acked_peak + {float(acks[1])!r}"
            again = f'(e.acked_at IS NOT NULL AND excluded."end" IS NULL AND ({lapsed} OR {worse}))'
            acks = [f"{c} = CASE WHEN {again} THEN NULL ELSE e.{c} END" for c in ("acked_at", "acked_by", "acked_peak")]
            acks += [f"realarmed_at = CASE WHEN {again} THEN excluded.opened_at ELSE e.realarmed_at END",
                     f"realarm_why = CASE WHEN {again} THEN (CASE WHEN {lapsed} THEN 'lapsed' ELSE 'worsened' END) "
                     f"ELSE e.realarm_why END"]
            cur.executemany(
                f"INSERT INTO stream_episodes AS e ({quoted}) VALUES ({self._marks(len(cols))}) "
                "ON CONFLICT (bed, start, kind) DO UPDATE SET " + ", ".join(
                    [f'"{c}" = excluded."{c}"' for c in cols if c not in kept] + acks),
                [tuple(e[c] for c in cols) for e in episodes])
        if ended:
            self.end_conditions(ended)
        if beds and not self.store.sqlite:  # PostgreSQL: the new rows copied in, then one UPDATE (not one per bed)
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS stream_beds_new (bed text, ls int8, la float8, st text, "
                        "rs int8) ON COMMIT DELETE ROWS")
            with cur.copy("COPY stream_beds_new FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int8", "float8", "text", "int8"])
                for b in beds:
                    copy.write_row((b["bed"], b["last_second"], b["last_arrival"], b["state"], b["refused_since"]))
            cur.execute("UPDATE stream_beds AS b SET version = b.version + 1, last_second = v.ls, "
                        "last_arrival = v.la, state = v.st, refused_since = v.rs FROM stream_beds_new AS v "
                        "WHERE b.bed = v.bed")
        elif beds:
            cur.executemany(f"UPDATE stream_beds SET version = version + 1, last_second = {q}, last_arrival = {q}, "
                            f"state = {q}, refused_since = {q} WHERE bed = {q}",
                            [(b["last_second"], b["last_arrival"], b["state"], b["refused_since"], b["bed"])
                             for b in beds])

    def end_conditions(self, ended: Sequence[tuple]) -> None:
        """End open conditions "no valid data": (end second, wall clock, bed, start) each."""
        q = self.store.mark
        self.cursor.executemany(f'UPDATE stream_episodes SET "end" = {q}, closed_at = {q} '
                                f"WHERE bed = {q} AND start = {q} AND kind = '' AND \"end\" IS NULL", list(ended))

    def refused(self, beds: Sequence[tuple]) -> None:
        """The beds' open condition "no valid data" (its start, or None): (start, bed) each; their versions move."""
        q = self.store.mark
        self.cursor.executemany(f"UPDATE stream_beds SET version = version + 1, refused_since = {q} WHERE bed = {q}",
                                list(beds))

    def outbox(self, message: str, now: float, published: Sequence[int] = ()) -> int:
        """Keep a result message with this transaction's writes (`Store.unpublished`), and delete the `published`
        ones; its id."""
        q = self.store.mark
        if published:
            self.cursor.execute(f"DELETE FROM stream_outbox WHERE id IN ({self._marks(len(published))})",
                                tuple(published))
        self.cursor.execute(f"INSERT INTO stream_outbox (created_at, message) VALUES ({q}, {q}) RETURNING id",
                            (now, message))
        return int(self.cursor.fetchone()[0])


def _bed_row(r: Any) -> BedRow:
    return BedRow(r["bed"], int(r["version"]), None if r["last_second"] is None else int(r["last_second"]),
                  r["last_arrival"], r["state"], None if r["refused_since"] is None else int(r["refused_since"]))


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy's "begin" event issues BEGIN IMMEDIATE itself
    dbapi_conn.execute("PRAGMA journal_mode=WAL")  # readers (GET) do not wait for the writer
    dbapi_conn.execute("PRAGMA synchronous=NORMAL")
