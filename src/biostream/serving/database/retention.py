"""Bounded storage: what is older than the retention of its kind goes, exactly that and nothing else, while ingest
runs (params.yaml `stream.retention`; docs/security.md).

PostgreSQL drops whole day partitions of `stream_seconds`, which needs the tables' owner (`biostream retention`, run
by the owner's role, e.g. hourly); on sqlite the service itself sweeps every `every_s`. The stream's exactly-once
holds throughout: a second inside the retention is never touched, and one removed is older than any bed's late
window."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from biostream.core.params import DAY, DEFAULT_RETENTION, Retention  # noqa: F401 (re-exported)

AHEAD_DAYS = 3  # day partitions made ahead of today (a missed run or two never sends today's seconds to the default)
BATCH = 10_000  # episodes or audit entries deleted per statement
BEDS_PER_SWEEP = 50  # sqlite: beds whose past seconds are deleted per transaction
PARTITION = re.compile(r"stream_seconds_p(\d{8})")
LOCK_TIMEOUT = "20ms"  # PostgreSQL: how long a partition's detach (or make) waits for the parent table's lock,
# queueing the ingests that come meanwhile, before it lets them through and tries again (`_locked`)


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def partition_name(day_start: int) -> str:
    return f"stream_seconds_p{datetime.fromtimestamp(day_start, UTC):%Y%m%d}"


def partitions(conn: sa.Connection) -> dict[str, int]:
    """PostgreSQL: the day partitions of `stream_seconds`, by name: their first second."""
    rows = conn.execute(sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'stream_seconds'")).scalars()
    out = {}
    for name in rows:
        m = PARTITION.fullmatch(name)
        if m:
            out[name] = int(datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC).timestamp())
    return out


def run(url: str, retention: Retention, now: float | None = None) -> dict[str, Any]:
    """One retention pass over the store at `url`; what it did (cut-offs, partitions made and dropped, rows
    deleted). Safe to run while ingest runs, and from several processes at once.

    Cut-offs fall on midnight UTC: with `seconds_days: 7` a scored second goes once it is from before the midnight 7
    days before today's (so it is kept at least 7 days, and at most a day more); an episode once it ended before its
    cut-off (`episodes_days`; an open episode is never removed); an audit entry once it was made before its cut-off
    (`audit_days`). Seconds: `_partitions` on PostgreSQL, run as the tables' owner (the service's least-privilege
    role cannot make or drop partitions, and is refused), `_sweep_seconds` on sqlite. Episodes and audit entries are
    deleted in batches on both stores."""
    from biostream.core.config import ConfigError
    from biostream.serving.database.migrate import ensure, migration_engine

    ensure(url)
    now = time.time() if now is None else now
    cut = retention.cutoffs(now)
    engine = migration_engine(url)
    done: dict[str, Any] = {"cutoffs": {k: iso(v) for k, v in cut.items()}}
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                owner = conn.execute(sa.text("SELECT tableowner FROM pg_tables WHERE tablename = 'stream_seconds'")
                                     ).scalar_one_or_none()
                role = conn.execute(sa.text("SELECT current_user")).scalar_one()
                may = conn.execute(sa.text("SELECT pg_has_role(current_user, :o, 'USAGE')"), {"o": owner}).scalar()
            if not may:
                raise ConfigError(f"retention makes and drops partitions: run it as the tables' owner {owner!r} "
                                  f"(this is {role!r}, a service's role)")
            done.update(_partitions(engine, cut["seconds"], int(now) // DAY * DAY))
        else:
            done["seconds_deleted"] = _sweep_seconds(engine, cut["seconds"])
        done["episodes_deleted"] = _delete(engine, "stream_episodes", '"end" IS NOT NULL AND "end" <= :c',
                                           cut["episodes"])
        done["audit_deleted"] = _delete(engine, "audit_log", "at < :c", cut["audit"])
    finally:
        engine.dispose()
    return done


def _delete(engine: sa.Engine, table: str, where: str, cutoff: int) -> int:
    """Delete the rows of `table` matching `where` in batches (one short transaction each)."""
    row = "ctid" if engine.dialect.name == "postgresql" else "rowid"
    total = 0
    while True:
        with engine.begin() as conn:
            n = conn.execute(sa.text(f"DELETE FROM {table} WHERE {row} IN (SELECT {row} FROM {table} WHERE {where} "
                                     f"LIMIT {BATCH})"), {"c": cutoff}).rowcount
        total += n
        if n < BATCH:
            return total


def _sweep_seconds(engine: sa.Engine, cutoff: int) -> int:
    """sqlite: delete the seconds before `cutoff`, a few beds per transaction (by the primary key's index), so the
    write lock is held milliseconds at a time."""
    with engine.connect() as conn:
        beds = list(conn.execute(sa.text("SELECT bed FROM stream_beds ORDER BY bed")).scalars())
        conn.rollback()
    total = 0
    for i in range(0, len(beds), BEDS_PER_SWEEP):
        part = beds[i:i + BEDS_PER_SWEEP]
        with engine.begin() as conn:
            total += conn.execute(
                sa.text("DELETE FROM stream_seconds WHERE bed IN :beds AND second < :c").bindparams(
                    sa.bindparam("beds", expanding=True)), {"beds": part, "c": cutoff}).rowcount
    return total


def _partitions(engine: sa.Engine, cutoff: int, today: int) -> dict[str, Any]:
    """PostgreSQL: make the day partitions from the cut-off's day to `AHEAD_DAYS` ahead that hold rows or are to
    come (rows waiting in the default partition move in), drop those wholly before the cut-off, delete what of the
    default partition is before it (row by row).

    A day past its cut-off is detached (a catalogue change, in a moment no ingest holds the table) and dropped whole:
    a table drop instead of deleting ~170 M rows at 2,000 beds. A second no day partition covers (a late replay, a
    store from before partitioning) lands in the default partition and moves into its day's when that is made."""
    made, dropped = [], []
    with engine.connect() as conn:
        have = partitions(conn)
        waiting = sorted(int(d) * DAY for d in conn.execute(sa.text(
            "SELECT DISTINCT second / 86400 FROM stream_seconds_default WHERE second >= :c"), {"c": cutoff}).scalars())
        conn.rollback()
    wanted = sorted({*waiting, *range(today, today + (AHEAD_DAYS + 1) * DAY, DAY)})
    for day in wanted:
        name = partition_name(day)
        if name not in have:
            _locked(engine, lambda conn, day=day, name=name: _make(conn, name, day))
            made.append(name)
    for name, day in sorted(have.items(), key=lambda kv: kv[1]):
        if day + DAY <= cutoff:
            _locked(engine, lambda conn, name=name: _detach(conn, name))
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE {name}")
            dropped.append(name)
    default_deleted = _delete(engine, "stream_seconds_default", "second < :c", cutoff)
    return {"partitions_made": made, "partitions_dropped": dropped, "default_deleted": default_deleted}


def _make(conn: sa.Connection, name: str, day: int) -> None:
    """A day's partition, with the default partition's rows of that day moved in (in one transaction: a reader sees
    them in one place or the other)."""
    bounds = {"lo": day, "hi": day + DAY}
    _parent_lock(conn)  # no insert meanwhile
    conn.execute(sa.text("CREATE TEMP TABLE moving ON COMMIT DROP AS WITH gone AS (DELETE FROM stream_seconds_default "
                         "WHERE second >= :lo AND second < :hi RETURNING *) SELECT * FROM gone"), bounds)
    conn.exec_driver_sql(f"CREATE TABLE {name} PARTITION OF stream_seconds FOR VALUES FROM ({day}) TO ({day + DAY})")
    conn.exec_driver_sql("INSERT INTO stream_seconds SELECT * FROM moving")


def _detach(conn: sa.Connection, name: str) -> None:
    """Detach a day's partition: a change of the catalogue only, under the parent's lock; its files are removed by
    the `DROP` after, which locks that table alone (a day of 2,000 beds is ~1.5 GB to unlink)."""
    _parent_lock(conn)
    conn.exec_driver_sql(f"ALTER TABLE stream_seconds DETACH PARTITION {name}")


def _parent_lock(conn: sa.Connection) -> None:
    """The parent table's exclusive lock, taken first: an ingest locks the parent, then the partitions its rows go
    to; taking a partition's lock first would deadlock against it. Held for milliseconds (a drop, or a day made
    ahead of its rows); PostgreSQL forbids detaching a partition concurrently while a default partition exists, and
    the default partition is what keeps a second no day partition covers from being refused."""
    conn.exec_driver_sql("LOCK TABLE stream_seconds IN ACCESS EXCLUSIVE MODE")


def _locked(engine: sa.Engine, work: Any, tries: int = 3000, pause_s: float = 0.05) -> None:
    """Run `work` in a transaction that waits at most `LOCK_TIMEOUT` for a table lock, else tries again after
    `pause_s` (up to `tries` times): an exclusive lock waiting behind a batch in flight would hold every later
    ingest behind it, so it is taken in a moment the parent table is free (between batches) or not at all."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(tries):
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                work(conn)
            return
        except OperationalError as error:
            if "lock timeout" not in str(error.orig) or attempt == tries - 1:
                raise
            time.sleep(pause_s)
