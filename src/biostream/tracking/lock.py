"""The registry gate's lock: one `register` run at a time per registered model, on every machine that shares the
tracking store.

- An embedded sqlite store is one file on one machine: a file lock beside it (`<store>.register.lock`).
- A store on a database server (`tracking.uri: postgresql+psycopg://...`) or an MLflow tracking server
  (`http(s)://...`) is shared by machines that share no file system: a PostgreSQL advisory lock
  (`pg_advisory_lock`), on `register.lock_url` or else on the tracking store's own database. PostgreSQL holds it
  for the connection, so a holder that dies (SIGKILL, a lost machine) releases it when its connection ends.
- An MLflow server without `register.lock_url` is refused: a local file would not stop another machine.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from biostream.core.config import ConfigError

log = logging.getLogger("biostream")

_DRIVER = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://")


def is_postgres(url: str) -> bool:
    return bool(_DRIVER.match(url))


def is_server(uri: str) -> bool:
    """An MLflow tracking server (its REST API), not a store this process opens itself."""
    return uri.startswith(("http://", "https://"))


def conninfo(url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (`postgresql+psycopg://u@h/db` -> `postgresql://u@h/db`)."""
    return _DRIVER.sub("postgresql://", url, count=1)


def lock_key(name: str) -> int:
    """The advisory lock's 64-bit key of a registered model (the same on every machine)."""
    return int.from_bytes(hashlib.blake2b(f"biostream.register:{name}".encode(), digest_size=8).digest(), "big",
                          signed=True)


def lock_target(tracking_uri: str, lock_url: str | None, out: Path) -> tuple[str, str]:
    """("postgres", url) or ("file", path) of the lock a register run on this store takes."""
    if lock_url:
        if not is_postgres(lock_url):
            raise ConfigError(f"params.yaml: register.lock_url must be a PostgreSQL URL (postgresql+psycopg://user@"
                              f"host/db) every machine that registers can reach, got {lock_url!r}; or null for a "
                              "lock beside an embedded sqlite store")
        return "postgres", lock_url
    if is_postgres(tracking_uri):
        return "postgres", tracking_uri
    if is_server(tracking_uri):
        raise ConfigError(f"tracking.uri {tracking_uri} is an MLflow server that other machines share, so the "
                          "registry gate's lock cannot be a local file: set params.yaml: register.lock_url to a "
                          "PostgreSQL URL they all reach (for example the server's backend store, "
                          "postgresql+psycopg://user@db-host/mlflow)")
    if tracking_uri.startswith("sqlite:///"):
        return "file", str(Path(tracking_uri.removeprefix("sqlite:///")).with_suffix(".register.lock"))
    return "file", str(out.with_suffix(".lock"))


@contextmanager
def advisory_lock(url: str, name: str, timeout_s: float, poll_s: float = 0.5) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock of `name` on `url` for the block; TimeoutError after `timeout_s`."""
    import psycopg

    key = lock_key(name)
    try:
        conn = psycopg.connect(conninfo(url), autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise ConnectionError(f"the registry lock's database {url} is not reachable ({exc}); check "
                              "register.lock_url (or tracking.uri)") from None
    with conn:
        deadline = time.monotonic() + timeout_s
        waited = False
        while not conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"another register run holds the registry lock of '{name}' on {url} (advisory "
                                   f"lock {key}) for over register.lock_timeout_s = {timeout_s:g} s")
            if not waited:
                log.info("waiting for another register run's lock of '%s' on %s", name, url)
                waited = True
            time.sleep(poll_s)
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextmanager
def registry_lock(tracking_uri: str, lock_url: str | None, name: str, out: Path, timeout_s: float) -> Iterator[None]:
    """The lock of the module docstring, held for the block."""
    kind, where = lock_target(tracking_uri, lock_url, out)
    if kind == "postgres":
        with advisory_lock(where, name, timeout_s):
            yield
        return
    from filelock import FileLock

    Path(where).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(where, timeout=timeout_s):
        yield
