"""The stream store's schema, made and changed by Alembic migrations (`migrations/versions`), and the privileges
of the service's own database role (docs/security.md).

`biostream db upgrade`, run as the database's owner, brings a store to this version's schema (`upgrade`); the
`alembic_version` table holds where a store stands. A process opening a store checks it first (`ensure`): only the
owner changes a PostgreSQL store's schema. `biostream db grant <role>` gives a service's role what the service uses
and nothing more (`grant`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from biostream.core.config import ConfigError

HEAD = "0005"
MIGRATIONS = Path(__file__).parent / "migrations"
TABLES = ("stream_beds", "stream_seconds", "stream_episodes", "stream_outbox", "api_keys", "audit_log")
LOCK_ID = 0x62696F73  # PostgreSQL advisory lock held while a process migrates ("bios")
ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# what a service role may do, table by table: nothing else (no DDL, no UPDATE/DELETE of the audit trail)
SERVICE_GRANTS = {
    "stream_beds": "SELECT, INSERT, UPDATE",
    "stream_seconds": "SELECT, INSERT, UPDATE",  # UPDATE: a late value merged into its second
    "stream_episodes": "SELECT, INSERT, UPDATE",  # UPDATE: an episode closed, extended or acknowledged
    "stream_outbox": "SELECT, INSERT, DELETE",  # DELETE: a result message once published
    "api_keys": "SELECT",
    "audit_log": "SELECT, INSERT",
}
SEQUENCES = ("stream_outbox_id_seq", "audit_log_id_seq")


def where(url: str) -> str:
    """A store URL without its password, for messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def migration_engine(url: str) -> sa.Engine:
    """An engine whose transactions hold the database's write lock from their start (sqlite: BEGIN IMMEDIATE, so
    two processes opening a new store migrate one after the other)."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60}, poolclass=sa.pool.NullPool)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def revision(conn: sa.Connection) -> str | None:
    """The schema revision the store stands at (None: never migrated). Read directly: Alembic's own reader logs two
    lines at INFO each time, and every process opening the store asks."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one_or_none()


def _alembic(conn: sa.Connection) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def upgrade(url: str, target: str = "head") -> tuple[str | None, str | None]:
    """Migrate the store at `url` to `target` in one transaction (PostgreSQL: under an advisory lock, so processes
    starting together migrate once): a new store made, an older one changed in place, one made before migrations
    existed taken over as it is. The revisions before and after."""
    from alembic import command

    engine = migration_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
            before = revision(conn)
            command.upgrade(_alembic(conn), target)
            return before, revision(conn)
    finally:
        engine.dispose()


def ensure(url: str) -> None:
    """Make sure the store at `url` stands at this version's schema before a process (a service, a consumer, a
    `biostream keys` command) uses it. sqlite (a file its user owns) is upgraded on the spot; so is a new, empty
    PostgreSQL database whose role may create tables (as MLflow makes a new tracking store). A PostgreSQL store at
    an older schema is refused, naming the command: only its owner changes it."""
    engine = migration_engine(url)
    try:
        with engine.connect() as conn:
            current = revision(conn)
            ours = set(sa.inspect(conn).get_table_names()) & set(TABLES)
    except sa.exc.OperationalError as error:
        raise ConfigError(f"the stream store {where(url)} cannot be opened: {error.orig}") from None
    finally:
        engine.dispose()
    if current == HEAD:
        return
    if url.startswith("sqlite") or (current is None and not ours):
        try:
            upgrade(url)
        except sa.exc.ProgrammingError as error:  # PostgreSQL: a role that may not create tables
            why = str(error.orig).splitlines()[0]
            raise ConfigError(f"the stream store {where(url)} has no schema and this role may not make it ({why}): "
                              f"run `biostream db upgrade --store <the owner's URL>` as the database's owner, then "
                              f"`biostream db grant <this role>`") from None
        return
    stands = current or "none (made before migrations)"
    raise ConfigError(f"the stream store {where(url)} stands at schema revision {stands}, this version needs {HEAD}: "
                      f"run `biostream db upgrade --store <the owner's URL>` as the database's owner")


def grant(url: str, role: str) -> list[str]:
    """Give the PostgreSQL role `role` what a service uses and nothing more: read and write the beds, seconds and
    episodes, publish the outbox, read the keys, append to the audit trail; it cannot create, alter or drop a table,
    change or delete an audit entry, or make a key. Returns the statements run. The role must exist (`CREATE ROLE
    <role> LOGIN PASSWORD '...'`, by whoever manages the server's roles)."""
    if not ROLE.fullmatch(role):
        raise ValueError(f"role {role!r}: a PostgreSQL role name of lower-case letters, digits and _ (at most 63)")
    if url.startswith("sqlite"):
        raise ValueError("a sqlite store has no roles: its file's owner is its only user (grants are for PostgreSQL)")
    engine = migration_engine(url)
    try:
        with engine.begin() as conn:
            if not conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
                raise ValueError(f"no PostgreSQL role {role!r}: create it first (CREATE ROLE {role} LOGIN PASSWORD "
                                 f"'...'), then grant")
            if revision(conn) != HEAD:
                raise ValueError(f"the store is not at schema {HEAD}: run `biostream db upgrade` first")
            database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
            done = [f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {role}',
                    f"GRANT USAGE ON SCHEMA public TO {role}",
                    f"REVOKE ALL ON {', '.join(TABLES)}, alembic_version FROM {role}",
                    *(f"GRANT {what} ON {table} TO {role}" for table, what in SERVICE_GRANTS.items()),
                    f"GRANT SELECT ON alembic_version TO {role}",
                    f"GRANT USAGE ON SEQUENCE {', '.join(SEQUENCES)} TO {role}"]
            for statement in done:
                conn.exec_driver_sql(statement)
            return done
    finally:
        engine.dispose()
