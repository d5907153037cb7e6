"""The stream store as the service made it before migrations (SQLAlchemy's create_all): a table is made only where
it is missing, so a store made by an earlier version is taken over as it is.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SERIAL = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "stream_beds" not in have:
        op.create_table(
            "stream_beds",
            sa.Column("bed", sa.String(128), primary_key=True),
            sa.Column("version", sa.BigInteger, nullable=False),
            sa.Column("last_second", sa.BigInteger),
            sa.Column("last_arrival", sa.Float),
            sa.Column("state", sa.Text))
    if "stream_seconds" not in have:
        op.create_table(
            "stream_seconds",
            sa.Column("bed", sa.String(128), primary_key=True),
            sa.Column("second", sa.BigInteger, primary_key=True),
            sa.Column("vals", sa.LargeBinary, nullable=False),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("above", sa.Boolean, nullable=False),
            sa.Column("technical", sa.Boolean, nullable=False),
            sa.Column("alarm", sa.Boolean, nullable=False),
            sa.Column("top_signals", sa.Text),
            sa.Column("scored_at", sa.Float, nullable=False))
    if "stream_episodes" not in have:
        op.create_table(
            "stream_episodes",
            sa.Column("bed", sa.String(128), primary_key=True),
            sa.Column("start", sa.BigInteger, primary_key=True),
            sa.Column("end", sa.BigInteger),
            sa.Column("last_on", sa.BigInteger, nullable=False),
            sa.Column("alarm_class", sa.String(16), nullable=False),
            sa.Column("peak_second", sa.BigInteger),
            sa.Column("peak_score", sa.Float),
            sa.Column("signals", sa.Text),
            sa.Column("opened_at", sa.Float, nullable=False),
            sa.Column("closed_at", sa.Float))
        op.create_index("stream_episodes_open", "stream_episodes", ["end"])
    if "stream_outbox" not in have:
        op.create_table(
            "stream_outbox",
            sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("message", sa.Text, nullable=False))
    if "api_keys" not in have:
        op.create_table(
            "api_keys",
            sa.Column("key_id", sa.String(12), primary_key=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column("digest", sa.String(64), nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
            sa.Column("expires_at", sa.Float),
            sa.Column("revoked_at", sa.Float))
    if "audit_log" not in have:
        op.create_table(
            "audit_log",
            sa.Column("id", SERIAL, primary_key=True, autoincrement=True),
            sa.Column("at", sa.Float, nullable=False),
            sa.Column("key_id", sa.String(12)),
            sa.Column("role", sa.String(16)),
            sa.Column("action", sa.String(40), nullable=False),
            sa.Column("target", sa.String(200)),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("status", sa.Integer),
            sa.Column("client", sa.String(64)))
        op.create_index("audit_log_at", "audit_log", ["at"])
