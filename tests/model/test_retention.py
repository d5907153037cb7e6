"""Bounded storage and the store's keepers (issue #29, section 3), on sqlite and the real PostgreSQL of these
machines (which these tests fail without, not skip): retention removes exactly what is older than its cut-off while
ingest goes on (PostgreSQL: a day's partition dropped whole), the stream's exactly-once intact; the schema is made
and changed by Alembic migrations (`biostream db upgrade`) run by the owner; the service's role (`biostream db
grant`) reads and writes but cannot alter, drop, erase the audit trail or make a key."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from biostream.core.config import ConfigError
from biostream.serving.database import migrate
from biostream.serving.database.retention import DAY, Retention, partition_name, partitions, run
from biostream.serving.security import cli
from biostream.serving.security.keys import KeyStore, Verifier
from biostream.serving.streaming.engine import Chunk
from biostream.serving.streaming.store import Store, sqlite_url
from biostream.serving.streaming.tables import EPISODES
from tests.model.test_stream_replays import engines, stored_seconds
from tests.model.test_streams import START
from tests.pipeline.conftest import PG, scratch_database

pytestmark = pytest.mark.services  # the local PostgreSQL and Redis servers

T0 = START // DAY * DAY  # the midnight (UTC) of the first day
KEEP = Retention(seconds_days=3, episodes_days=5, audit_days=2, every_s=3600)
NOW = T0 + 8 * DAY + 3600  # an hour into the ninth day
CUT = KEEP.cutoffs(NOW)  # seconds: T0 + 5 days; episodes: T0 + 3 days; audit: T0 + 6 days


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("BIOSTREAM_KEY_PEPPER", "a-test-pepper-of-this-session")
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "streams.db")
    else:
        with scratch_database("biostream_retention") as url:
            yield url


@pytest.fixture
def pg_url(monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("BIOSTREAM_KEY_PEPPER", "a-test-pepper-of-this-session")
    with scratch_database("biostream_roles") as url:
        yield url


@pytest.fixture
def pg_and_role(monkeypatch) -> Iterator[tuple[str, str]]:
    """A scratch database and a login role of the local server with no privilege of its own (the role dropped
    after the database)."""
    monkeypatch.setenv("BIOSTREAM_KEY_PEPPER", "a-test-pepper-of-this-session")
    name = f"bs_service_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(f"{PG}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN")
    try:
        with scratch_database("biostream_roles") as url:
            yield url, name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")
        admin.dispose()


def as_role(url: str, role: str) -> str:
    return url.replace("//postgres@", f"//{role}@")


def test_retention_removes_exactly_what_is_older_while_ingest_goes_on(alarming, store_url):
    scorer, _, values = alarming
    with engines(scorer, store_url, 2, retention=KEEP) as (engine, live):
        # four seconds around each of nine midnights (the cut-off falls between two seconds of one of them), the
        # owner's retention job running each day (PostgreSQL: the days' partitions made ahead)
        for k in range(9):
            run(store_url, KEEP, now=T0 + (k - 1) * DAY)
            engine.ingest([Chunk("old", T0 + k * DAY - 2, values[:, :4].copy())], now=float(k))
        with engine.store.engine.begin() as conn:  # episodes ending around their cut-off, and one still open
            conn.execute(EPISODES.insert(), [
                {"bed": "episodes", "start": s, "end": e, "last_on": (e or s + 9) - 1, "alarm_class": "physiological",
                 "opened_at": 0.0} for s, e in ((CUT["episodes"] - 99, CUT["episodes"] - 1),
                                                (CUT["episodes"] - 90, CUT["episodes"]),
                                                (CUT["episodes"] - 80, CUT["episodes"] + 1), (T0 - DAY, None))])
        keys = KeyStore(store_url, create=True)
        keys.write_audit([{"at": CUT["audit"] + d, "action": "test", "outcome": "allowed"} for d in (-1, 0, 0.5)])

        # a second worker streams a bed of today, a second per message, while retention runs
        streamed, errors = 60, []

        def stream() -> None:
            try:
                for t in range(streamed):
                    live.ingest([Chunk("live", NOW + t, values[:, t:t + 1].copy())], now=float(NOW + t))
            except Exception as error:  # pragma: no cover - reported by the assertion below
                errors.append(error)

        worker = threading.Thread(target=stream)
        worker.start()
        done = run(store_url, KEEP, now=NOW)
        worker.join(timeout=300)
        assert not worker.is_alive() and errors == []

        kept = sorted(T0 + k * DAY + d - START for k in range(9) for d in range(-2, 2)
                      if T0 + k * DAY + d >= CUT["seconds"])
        assert stored_seconds(engine.store, "old") == kept, "exactly the seconds before the cut-off went"
        assert min(kept) == CUT["seconds"] - START and len(kept) == 4 * 3 + 2
        assert stored_seconds(engine.store, "live") == [NOW + t - START for t in range(streamed)], "each once"
        eps = engine.store.episodes("episodes")
        assert [e["end"] for e in eps] == [None, CUT["episodes"] + 1], "ended before the cut-off: gone; open: kept"
        audit_at = [e for e in keys.audit(since=CUT["audit"] - 10) if e["action"] == "test"]
        assert len(audit_at) == 2, "the entry made before the cut-off went, the others stay"
        assert done["episodes_deleted"] == 2 and done["audit_deleted"] == 1
        # the stream's exactly-once holds: the whole live buffer again is repeats
        answers, problems = live.ingest([Chunk("live", NOW, values[:, :streamed].copy())], now=float(NOW + streamed))
        assert problems == [] and answers[0].repeated == streamed and answers[0].seconds == []
        if engine.store.sqlite:
            assert done["seconds_deleted"] == 4, "the day before the cut-off's (the earlier days' went before)"
        else:  # the day before the cut-off's dropped whole (the earlier days' went before)
            assert done["partitions_dropped"] == [partition_name(CUT["seconds"] - DAY)]
            assert done["default_deleted"] == 0, "every second was in its day's partition"
            with engine.store.engine.connect() as conn:
                have = partitions(conn)
                where = dict(conn.execute(sa.text("SELECT second, tableoid::regclass::text FROM stream_seconds "
                                                  "WHERE bed = 'old'")).all())
            assert all(day + DAY > CUT["seconds"] for day in have.values()), "no partition wholly past the cut-off"
            assert {partition_name(NOW // DAY * DAY + k * DAY) for k in range(4)} <= set(have), "made ahead"
            assert all(name == partition_name(t // DAY * DAY) for t, name in where.items()), "each in its day"
        again = run(store_url, KEEP, now=NOW)  # a second pass: nothing more goes
        assert stored_seconds(engine.store, "old") == kept and again["episodes_deleted"] == again["audit_deleted"] == 0
        keys.dispose()


def test_the_retention_command_reads_params_and_says_what_it_did(tmp_path, monkeypatch, capsys):
    url = sqlite_url(tmp_path / "streams.db")
    (tmp_path / "params.yaml").write_text("stream:\n  retention:\n    seconds_days: 2\n    episodes_days: 365\n"
                                          "    audit_days: 30\n    every_s: 3600\n")
    monkeypatch.chdir(tmp_path)
    cli.main(["--store", url, "retention", "--now", "2026-12-06T10:00:00Z"])
    out = json.loads(capsys.readouterr().out)
    assert out["cutoffs"] == {"seconds": "2026-12-04T00:00:00Z", "episodes": "2025-12-06T00:00:00Z",
                              "audit": "2026-11-06T00:00:00Z"}
    (tmp_path / "params.yaml").write_text("stream:\n  retention:\n    second_days: 2\n")
    with pytest.raises(SystemExit, match="second_days: unknown key; did you mean 'seconds_days'"):
        cli.main(["--store", url, "retention"])
    (tmp_path / "params.yaml").write_text("stream:\n  retention:\n    seconds_days: 2\n")
    with pytest.raises(SystemExit, match="stream.retention: episodes_days: missing.*every_s: missing"):
        cli.main(["--store", url, "retention"])


def test_a_store_made_before_migrations_is_upgraded_by_its_owner_and_keeps_its_rows(pg_url, tmp_path, capsys):
    """A PostgreSQL store at an older schema is refused (only its owner changes it), `biostream db upgrade` takes
    it to this version's, the seconds it had kept and moved into their day's partition; sqlite is upgraded when
    opened."""
    assert migrate.upgrade(pg_url, "0001") == (None, "0001")
    row = f"('bed-1', {T0 + 7}, '\\x00', 0.5, false, false, false, null, 1.0)"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"INSERT INTO stream_seconds VALUES {row}")
    with pytest.raises(ConfigError, match=r"revision 0001.*biostream db upgrade"):
        Store(pg_url)
    cli.main(["--store", pg_url, "db", "upgrade"])
    assert json.loads(capsys.readouterr().out)["after"] == migrate.HEAD
    store = Store(pg_url)
    assert [r["second"] for r in store.seconds("bed-1")] == [T0 + 7]
    run(pg_url, KEEP, now=T0 + 3600)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT tableoid::regclass::text FROM stream_seconds")).scalar_one() == \
            partition_name(T0)
    store.dispose()
    engine.dispose()
    old = sqlite_url(tmp_path / "old.db")
    migrate.upgrade(old, "0001")
    Store(old).dispose()  # sqlite: upgraded on the spot
    with sa.create_engine(old).connect() as conn:
        assert migrate.revision(conn) == migrate.HEAD


def test_the_service_role_reads_and_writes_but_cannot_alter_drop_erase_the_trail_or_make_keys(
        alarming, pg_and_role, capsys):
    scorer, pid, values = alarming
    pg_url, service_role = pg_and_role
    service = as_role(pg_url, service_role)
    with pytest.raises(ConfigError, match="no schema and this role may not make it.*biostream db upgrade"):
        Store(service)  # a new database, and a role that may not create tables
    migrate.upgrade(pg_url)
    with pytest.raises(SystemExit, match="no PostgreSQL role 'nobody_here'"):
        cli.main(["--store", pg_url, "db", "grant", "nobody_here"])
    cli.main(["--store", pg_url, "db", "grant", service_role])
    assert "GRANT SELECT, INSERT ON audit_log" in capsys.readouterr().out
    owner_keys = KeyStore(pg_url, create=True)
    _, token = owner_keys.create("clinician", "ward board")
    # what the service does: ingest, read, check a key, append to the trail
    with engines(scorer, service) as (engine,):
        answers, problems = engine.ingest([Chunk(pid, START, values[:, :30].copy())], now=1.0)
        assert problems == [] and len(answers[0].seconds) == 30
        assert len(engine.store.seconds(pid)) == 30
        keys = KeyStore(service)
        assert Verifier(keys).check(token)[0] is not None
        keys.write_audit([{"at": 1.0, "action": "test", "outcome": "allowed"}])
        # and what it may not
        with keys.engine.connect() as conn:
            for statement in ("DROP TABLE stream_seconds", "ALTER TABLE stream_beds ADD COLUMN x int",
                              "TRUNCATE stream_seconds", "DELETE FROM stream_seconds", "CREATE TABLE x (i int)",
                              "DELETE FROM audit_log", "UPDATE audit_log SET outcome = 'denied'",
                              "INSERT INTO api_keys VALUES ('abc', 'admin', 'me', 'x', 0, null, null)",
                              "UPDATE api_keys SET revoked_at = null", "DROP TABLE stream_seconds_default"):
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied|must be owner"):
                    conn.exec_driver_sql(statement)
                conn.rollback()
        with pytest.raises(ConfigError, match="owner"):
            run(service, KEEP, now=NOW)
        keys.dispose()
    owner_keys.dispose()
    assert np.isfinite([r["score"] for r in Store(pg_url).seconds(pid)]).all()


def test_a_service_on_sqlite_sweeps_with_its_own_params(alarming, tmp_path):
    """The service's own sweep (`StreamEndpoints.retain_now`, run every `every_s` on sqlite) applies the
    retention its stream params carry."""
    from biostream.serving.streaming.http import StreamEndpoints

    scorer, pid, values = alarming
    url = sqlite_url(tmp_path / "streams.db")
    with engines(scorer, url, retention=KEEP) as (engine,):
        engine.ingest([Chunk(pid, CUT["seconds"] - 2, values[:, :4].copy())], now=1.0)
        done = StreamEndpoints(engine).retain_now(now=NOW)
        assert done["seconds_deleted"] == 2 and done["cutoffs"]["seconds"].startswith("2026-11-26")
        assert stored_seconds(engine.store, pid) == [CUT["seconds"] - START, CUT["seconds"] + 1 - START]
