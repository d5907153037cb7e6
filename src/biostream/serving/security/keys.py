"""API keys: `bsk_<key id>_<secret>`, a role each, an expiry; kept in the stream store's database (sqlite or
PostgreSQL) as a keyed SHA-256 (HMAC) of the secret, never in clear.

Why keys and not signed tokens (JWT): a monitor gateway, a ward board or a Prometheus scraper is a machine holding
one long-lived credential, which is what API keys are for (GitHub, Stripe and Prometheus' own `authorization`
scrape setting work this way); a key is revoked by a row, and every service worker sees it within `CACHE_S`
seconds, whereas a signed token stays valid until it expires unless a revocation list is kept beside it anyway.
A secret of 256 random bits needs no slow password hash (bcrypt would cost every request milliseconds): an HMAC
with a server-side pepper (`BIOSTREAM_KEY_PEPPER`, or a file beside a sqlite store) means a copy of the database
alone verifies nothing, and the digest is compared in constant time."""

from __future__ import annotations

import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from biostream.core.config import ConfigError
from biostream.serving.database.migrate import ensure

ROLES = ("gateway", "clinician", "integrator", "admin")
ROLE_NOTE = {"gateway": "POST /ingest (a monitor gateway writing vital signs; optionally only beds of given prefixes)",
             "clinician": "GET /beds/<bed>/scores, /beds/<bed>/episodes, /alarms, POST /explain, "
                          "POST /beds/<bed>/episodes/<start>/ack (acknowledge an alarm)",
             "integrator": "POST /predict, /score_series, /explain, /metadata",
             "admin": "GET /audit, /metrics; keys and retention through the `biostream` command"}
PEPPER_ENV = "BIOSTREAM_KEY_PEPPER"
CACHE_S = 2.0  # a worker re-reads a key's row at most this long after it last did: revocation takes effect within it
TOKEN = re.compile(r"bsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")

META = sa.MetaData()
KEYS = sa.Table(
    "api_keys", META,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # HMAC-SHA256(pepper, secret), hex
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float),  # null: never
    sa.Column("revoked_at", sa.Float),
    sa.Column("beds", sa.String(200)),  # a gateway key: the bed-id prefixes it may write, comma-separated (null: any)
)
AUDIT = sa.Table(  # append-only: the service and the CLI insert and read; nothing updates or deletes but retention
    # (on PostgreSQL the service's role may not: `biostream db grant`)
    "audit_log", META,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("key_id", sa.String(12)),  # null: no usable credential
    sa.Column("role", sa.String(16)),
    sa.Column("action", sa.String(40), nullable=False),  # the endpoint ("GET /beds/{bed}/scores") or the command
    sa.Column("target", sa.String(200)),  # the bed read, the key created or revoked
    sa.Column("outcome", sa.String(16), nullable=False),  # allowed, denied, or the HTTP status answered
    sa.Column("status", sa.Integer),
    sa.Column("client", sa.String(64)),  # the caller's address
    sa.Column("detail", sa.String(200)),  # e.g. the episode acknowledged
)
sa.Index("audit_log_at", AUDIT.c.at)


@dataclass(frozen=True)
class Key:
    key_id: str
    role: str
    name: str
    digest: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    beds: str | None = None

    @property
    def bed_prefixes(self) -> tuple[str, ...] | None:
        """The bed-id prefixes this key may write (None: any bed)."""
        return None if self.beds is None else tuple(p for p in self.beds.split(",") if p)

    def public(self) -> dict[str, Any]:
        """What `keys list` shows (never the digest)."""
        return {"key_id": self.key_id, "role": self.role, "name": self.name, "created_at": _iso(self.created_at),
                "expires_at": _iso(self.expires_at), "revoked_at": _iso(self.revoked_at), "beds": self.beds}


def bed_scope(text: str | None) -> str | None:
    """`--beds` as stored: comma-separated bed-id prefixes, each what a bed id starts with (ValueError naming a
    bad one); None: any bed."""
    from biostream.serving.streaming.messages import BED_FORM, BED_ID

    if text is None:
        return None
    prefixes = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in prefixes if not BED_ID.fullmatch(p)]
    if not prefixes or bad or len(",".join(prefixes)) > 200:
        raise ValueError(f"--beds {text[:60]!r}: give bed-id prefixes separated by commas (each the start of a bed "
                         f"id: {BED_FORM}), e.g. --beds icu3-,or1-; at most 200 characters")
    return ",".join(prefixes)


def operator() -> str:
    """Who runs a `biostream keys` command, for the audit trail: the OS user and host (BIOSTREAM_OPERATOR wins)."""
    import getpass
    import socket

    given = os.environ.get("BIOSTREAM_OPERATOR")
    if given:
        return given[:120]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()}"[:120]


def _iso(t: float | None) -> str | None:
    from datetime import UTC, datetime

    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def pepper_for(url: str, create: bool = False) -> bytes:
    """The server-side secret keyed into every digest: `BIOSTREAM_KEY_PEPPER`, else (sqlite) the file `key_pepper`
    beside the database, made (mode 600) by the first `keys create`."""
    given = os.environ.get(PEPPER_ENV)
    if given:
        return given.encode()
    path = url.split("///", 1)[-1] if url.startswith("sqlite") else ""
    if not path or path == ":memory:":
        raise ConfigError(f"set {PEPPER_ENV} (a long random secret, the same for every service worker and the "
                          f"`biostream keys` command) for the key store {url.split('@')[-1]}")
    file = Path(path).parent / "key_pepper"
    if not file.exists():
        if not create:
            raise ConfigError(f"no key has been created for {url} ({file} is missing): create one with "
                              f"`biostream keys create --role <{'|'.join(ROLES)}> --name <who>`")
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return file.read_text().strip().encode()


class KeyStore:
    """The keys and the audit trail in the database at `url` (the stream store's)."""

    def __init__(self, url: str, create: bool = False) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine = sa.create_engine(url, connect_args={"timeout": 60})
        else:
            self.engine = sa.create_engine(url, pool_pre_ping=True)
        ensure(url)
        self.pepper = pepper_for(url, create=create)

    def dispose(self) -> None:
        self.engine.dispose()

    def digest(self, secret: str) -> str:
        return hmac.new(self.pepper, secret.encode(), sha256).hexdigest()

    def create(self, role: str, name: str, expires_days: float | None = 90.0, by: str | None = None,
               now: float | None = None, beds: str | None = None) -> tuple[Key, str]:
        """A new key; returns it and its token (shown once: only its digest is kept). `beds`: a gateway key's
        bed-id prefixes (`bed_scope`); `by`: the operator, as the audit trail names them."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not name or len(name) > 200:
            raise ValueError("name the key's holder (1 to 200 characters), e.g. --name 'ward 3 gateway'")
        if expires_days is not None and not expires_days > 0:
            raise ValueError(f"--expires-days {expires_days}: give a positive number of days, or none")
        if beds is not None and role != "gateway":
            raise ValueError(f"--beds ties a gateway key to its beds; a {role} key reads or writes no bed's seconds")
        beds = bed_scope(beds)
        now = time.time() if now is None else now
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        key = Key(key_id, role, name, self.digest(secret), now,
                  None if expires_days is None else now + expires_days * 86400, None, beds)
        by = by or operator()
        with self.engine.begin() as conn:
            conn.execute(KEYS.insert().values(**key.__dict__))
            conn.execute(AUDIT.insert().values(at=now, action="keys create", target=key_id, outcome="allowed",
                                               client="cli", detail=f"by {by}: role {role}"
                                               + (f", beds {beds}" if beds else "")))
        return key, f"bsk_{key_id}_{secret}"

    def list_keys(self) -> list[Key]:
        with self.engine.connect() as conn:
            return [Key(**r) for r in conn.execute(sa.select(KEYS).order_by(KEYS.c.created_at)).mappings()]

    def get(self, key_id: str) -> Key | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(KEYS).where(KEYS.c.key_id == key_id)).mappings().first()
        return None if row is None else Key(**row)

    def revoke(self, key_id: str, now: float | None = None, by: str | None = None) -> Key:
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            done = conn.execute(KEYS.update().where(KEYS.c.key_id == key_id, KEYS.c.revoked_at.is_(None))
                                .values(revoked_at=now)).rowcount
            if done:
                conn.execute(AUDIT.insert().values(at=now, action="keys revoke", target=key_id, outcome="allowed",
                                                   client="cli", detail=f"by {by or operator()}"[:200]))
        key = self.get(key_id)
        if key is None:
            raise KeyError(f"no key {key_id!r}: `biostream keys list` shows the key ids")
        return key

    def write_audit(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            with self.engine.begin() as conn:
                conn.execute(AUDIT.insert(), entries)

    def audit(self, since: float | None = None, key_id: str | None = None, target: str | None = None,
              outcome: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """The trail's newest `limit` entries matching, oldest first (by the time of the request)."""
        q = sa.select(AUDIT)
        if since is not None:
            q = q.where(AUDIT.c.at >= since)
        if key_id is not None:
            q = q.where(AUDIT.c.key_id == key_id)
        if target is not None:
            q = q.where(AUDIT.c.target == target)
        if outcome is not None:
            q = q.where(AUDIT.c.outcome == outcome)
        # by when it happened: each service worker writes its entries once a second, so the ids of two workers'
        # entries interleave in the order of their writes, not of the requests
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(AUDIT.c.at.desc(), AUDIT.c.id.desc()).limit(limit)).mappings().all()
        return [{**r, "at": _iso(r["at"])} for r in reversed(rows)]


class Verifier:
    """A worker's check of presented tokens against the key store, each key's row cached for `CACHE_S`."""

    def __init__(self, store: KeyStore, cache_s: float = CACHE_S) -> None:
        self.store, self.cache_s = store, cache_s
        self._rows: dict[str, tuple[float, Key | None]] = {}

    def check(self, token: str, now: float | None = None) -> tuple[Key | None, str]:
        """The key a token is, or None and why not (for a 401)."""
        m = TOKEN.fullmatch(token)
        if m is None:
            return None, "the credential is not a BioStream key (bsk_<id>_<secret>)"
        key_id, secret = m.groups()
        now = time.time() if now is None else now
        cached = self._rows.get(key_id)
        if cached is None or now - cached[0] > self.cache_s:
            cached = (now, self.store.get(key_id))
            if len(self._rows) > 10_000:  # garbage ids cannot grow the cache without end
                self._rows.clear()
            self._rows[key_id] = cached
        key = cached[1]
        if key is None or not hmac.compare_digest(key.digest, self.store.digest(secret)):
            return None, "the key is not one this service knows (mistyped, or from another installation)"
        if key.revoked_at is not None:
            return None, f"key {key_id} was revoked at {_iso(key.revoked_at)}: ask an admin for a new one"
        if key.expires_at is not None and now >= key.expires_at:
            return None, f"key {key_id} expired at {_iso(key.expires_at)}: ask an admin for a new one"
        return key, ""
