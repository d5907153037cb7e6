"""`biostream keys|audit|db|retention ...`: a service's key store, audit trail, schema and retention, by the database
URL the service uses (`--store`; default: `BIOSTREAM_STREAM_STORE`, else params.yaml `stream.store`).

    biostream keys create --role clinician --name "ward 3 board" [--expires-days 90]   # prints the key once
    biostream keys create --role gateway --name "ward 3 gateway" --beds icu3-   # a gateway key for some beds
    biostream keys list | revoke <key id>
    biostream keys dev                     # development: one key per role in stores/dev-keys.env (mode 600)
    biostream audit [--since 2026-12-06T08:00:00Z] [--key <id>] [--bed <bed>] [--outcome denied] [--limit N]
    biostream db upgrade | grant <role>    # the schema to this version's (the owner) | a service role's privileges
    biostream retention [--now <time>]     # drop and delete what is older than params.yaml stream.retention
    biostream report --bed <bed> [--since <time>] [--until <time>] [--out reports] [--format html,pdf,text]
    biostream report --recording <file.csv|.parquet> [--start <time>]   # a recording scored whole
    biostream monitor [--since <time>] [--until <time>] [--out reports/monitoring] [--mlflow]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from biostream.core.config import ConfigError
from biostream.core.params import DEFAULT_MONITOR
from biostream.serving.database.retention import DEFAULT_RETENTION, Retention
from biostream.serving.security.keys import ROLE_NOTE, ROLES, KeyStore

DEV_KEYS = Path("stores/dev-keys.env")


def default_store() -> str:
    from biostream.serving.streaming.params import STORE_ENV

    given = os.environ.get(STORE_ENV)
    if given:
        return given
    params = Path("params.yaml")
    if params.exists():
        import yaml

        store = (yaml.safe_load(params.read_text()) or {}).get("stream", {}).get("store")
        if store:
            return str(store)
    return "sqlite:///stores/streams.db"


def dev_keys(store: KeyStore, path: Path = DEV_KEYS) -> Path:
    """One key per role for a development service, in an env file only its owner reads; kept while they are
    valid (re-made when the store no longer knows them)."""
    from biostream.serving.security.keys import Verifier

    if path.exists():
        tokens = dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().split()
                      if "=" in line)
        verifier = Verifier(store)
        if tokens and all(verifier.check(t)[0] is not None for t in tokens.values()):
            return path
    lines = []
    for role in ROLES:
        _, token = store.create(role, f"development ({role})", expires_days=30)
        lines.append(f"export BIOSTREAM_{role.upper()}_KEY={token}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def default_retention() -> Retention:
    """params.yaml `stream.retention` (where the command runs; every key written), else, with no params.yaml, the
    defaults (`DEFAULT_RETENTION`)."""
    params = Path("params.yaml")
    if params.exists():
        import yaml

        from biostream.core.params import section

        raw = ((yaml.safe_load(params.read_text()) or {}).get("stream") or {}).get("retention") or {}
        return section(Retention, raw, f"{params}: stream.retention")
    return DEFAULT_RETENTION


def _database(args: argparse.Namespace) -> None:
    from biostream.serving.database import migrate, retention

    url = args.store or default_store()
    if args.command == "retention":
        from biostream.serving.streaming.messages import time_text

        now = None if args.now is None else time_text(args.now, "--now")
        print(json.dumps({"store": migrate.where(url), **retention.run(url, default_retention(), now)}))
    elif args.action == "upgrade":
        before, after = migrate.upgrade(url, args.revision)
        print(json.dumps({"store": migrate.where(url), "before": before, "after": after}))
    else:
        for statement in migrate.grant(url, args.role):
            print(statement)


def _served(args: argparse.Namespace) -> None:
    from biostream.reporting.case import FORMATS
    from biostream.serving import commands

    url = args.store or default_store()
    if args.command == "report":
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise ValueError(f"--format {args.format!r}: give any of {', '.join(FORMATS)}, comma-separated")
        made = (commands.report_recording(args.recording, args.start, args.out, formats) if args.recording
                else commands.report(url, args.bed, args.since, args.until, args.out, formats))
        for path in made:
            print(path)
        return
    params = _params_file()
    uri = None
    if args.mlflow:
        uri = params.tracking.uri if params is not None else None
        if uri is None:
            raise ValueError("--mlflow needs params.yaml (its tracking.uri) where the command runs")
    monitor = params.stream.monitor if params is not None else DEFAULT_MONITOR
    state = commands.monitor(url, args.since, args.until, args.out, monitor, uri)
    print(json.dumps({"period": state["period"], "alerts": state["alerts"], "files": [
        str(args.out / "monitoring.json"), str(args.out / "monitoring.html")], **(
        {"mlflow": state["mlflow"]} if "mlflow" in state else {})}))


def _params_file() -> Any:
    """params.yaml where the command runs, validated (None: there is none)."""
    if not Path("params.yaml").exists():
        return None
    from biostream.core.params import load_params

    return load_params("params.yaml")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="biostream", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", default=None, help="the service's store URL (default: BIOSTREAM_STREAM_STORE, else "
                                                   "params.yaml stream.store)")
    sub = ap.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="create, list and revoke API keys").add_subparsers(dest="action", required=True)
    create = keys.add_parser("create", help="a new key (printed once)")
    create.add_argument("--role", required=True, choices=ROLES,
                        help="; ".join(f"{r}: {n}" for r, n in ROLE_NOTE.items()))
    create.add_argument("--name", required=True, help="who or what holds it, e.g. 'ward 3 gateway'")
    create.add_argument("--expires-days", type=float, default=90.0, help="days until it expires (default 90)")
    create.add_argument("--never-expires", action="store_true")
    create.add_argument("--beds", help="a gateway key: the bed-id prefixes it may write, comma-separated (e.g. "
                                       "icu3-,or1-); default: any bed")
    keys.add_parser("list", help="every key: id, role, name, created, expires, revoked (never the secret)")
    revoke = keys.add_parser("revoke", help="revoke a key: every service worker refuses it within seconds")
    revoke.add_argument("key_id")
    dev = keys.add_parser("dev", help=f"development keys, one per role, in {DEV_KEYS} (mode 600)")
    dev.add_argument("--file", type=Path, default=DEV_KEYS)
    audit = sub.add_parser("audit", help="read the audit trail (oldest first)")
    audit.add_argument("--since", help="ISO 8601 with a zone, or seconds since the epoch")
    audit.add_argument("--key")
    audit.add_argument("--bed")
    audit.add_argument("--outcome", choices=["allowed", "denied"])
    audit.add_argument("--limit", type=int, default=1000)
    db = sub.add_parser("db", help="the store's schema and roles").add_subparsers(dest="action", required=True)
    up = db.add_parser("upgrade", help="migrate the store to this version's schema (run as the database's owner)")
    up.add_argument("--revision", default="head", help="the schema revision to reach (default: head)")
    grant = db.add_parser("grant", help="PostgreSQL: give a service's role what it uses and nothing more")
    grant.add_argument("role", help="an existing PostgreSQL role (CREATE ROLE <role> LOGIN PASSWORD '...')")
    keep = sub.add_parser("retention", help="drop and delete what is older than params.yaml stream.retention "
                                            "(PostgreSQL: as the owner, e.g. hourly)")
    keep.add_argument("--now", help="the time to count from (default: now): ISO 8601 with a zone, or epoch seconds")
    rep = sub.add_parser("report", help="a bed's case report (HTML, PDF, text) from the store, with the served model")
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument("--bed", help="a bed of the store")
    which.add_argument("--recording", type=Path, help="a recording file (CSV or Parquet, as ingest_recordings reads "
                                                      "it), scored whole by the served model")
    rep.add_argument("--start", default="1970-01-01T00:00:00Z", help="--recording: the time of its first second "
                                                                     "(default: times read from its start)")
    rep.add_argument("--since", help="ISO 8601 with a zone, or epoch seconds (default: 24 h before --until)")
    rep.add_argument("--until", help="ISO 8601 with a zone, or epoch seconds (default: the bed's newest second)")
    rep.add_argument("--out", type=Path, default=Path("reports"))
    rep.add_argument("--format", default="html,pdf,text", help="any of html, pdf, text, comma-separated")
    mon = sub.add_parser("monitor", help="the live patients against the served model's training reference: drift, "
                                         "missingness, alarm rate, live recall (params.yaml stream.monitor)")
    mon.add_argument("--since", help="ISO 8601 with a zone, or epoch seconds (default: stream.monitor.period_s "
                                     "before --until)")
    mon.add_argument("--until", help="ISO 8601 with a zone, or epoch seconds (default: now)")
    mon.add_argument("--out", type=Path, default=Path("reports/monitoring"))
    mon.add_argument("--mlflow", action="store_true", help="log the report to MLflow (params.yaml tracking.uri) "
                                                           "against the serving model's version")
    args = ap.parse_args(argv)
    if args.command in ("report", "monitor"):
        try:
            _served(args)
        except (ValueError, ConfigError) as error:
            raise SystemExit(f"biostream {args.command}: {error}") from None
        return
    if args.command in ("db", "retention"):
        try:
            _database(args)
        except (ValueError, ConfigError) as error:
            raise SystemExit(f"biostream {args.command}: {error}") from None
        return
    try:  # a store with no key yet, or one that cannot be opened: the message, not a traceback
        store = KeyStore(args.store or default_store(),
                         create=args.command == "keys" and args.action in ("create", "dev"))
    except (ValueError, ConfigError) as error:
        raise SystemExit(f"biostream {args.command}: {error}") from None
    try:
        if args.command == "keys" and args.action == "create":
            key, token = store.create(args.role, args.name, None if args.never_expires else args.expires_days,
                                      beds=args.beds)
            print(json.dumps({**key.public(), "key": token}))
            print("the key is shown once: only its digest is kept", file=sys.stderr)
        elif args.command == "keys" and args.action == "list":
            for key in store.list_keys():
                print(json.dumps(key.public()))
        elif args.command == "keys" and args.action == "revoke":
            print(json.dumps(store.revoke(args.key_id).public()))
        elif args.command == "keys" and args.action == "dev":
            path = dev_keys(store, args.file)
            print(f"development keys (one per role) in {path}: `source {path}`, then e.g. curl -H \"Authorization: "
                  f"Bearer $BIOSTREAM_CLINICIAN_KEY\" localhost:3000/alarms", file=sys.stderr)
        else:
            from biostream.serving.streaming.messages import time_text

            since = None if args.since is None else time_text(args.since, "--since")
            for entry in store.audit(since, args.key, args.bed, args.outcome, args.limit):
                print(json.dumps(entry))
    except (ValueError, KeyError) as error:
        raise SystemExit(f"biostream {args.command}: {error.args[0] if error.args else error}") from None
    finally:
        store.dispose()


if __name__ == "__main__":
    main()
