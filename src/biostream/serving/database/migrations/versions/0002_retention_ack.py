"""Bounded storage and acknowledged alarms: on PostgreSQL `stream_seconds` becomes a table partitioned by day
(`retention` drops a day whole); the rows it had become its default partition, which takes any second no day
partition covers yet. Episodes keep who acknowledged them and when; the audit trail a detail (the alarm acknowledged).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stream_episodes", sa.Column("acked_at", sa.Float))
    op.add_column("stream_episodes", sa.Column("acked_by", sa.String(12)))
    op.add_column("audit_log", sa.Column("detail", sa.String(200)))
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE stream_seconds RENAME TO stream_seconds_default")
    op.execute("ALTER TABLE stream_seconds_default RENAME CONSTRAINT stream_seconds_pkey "
               "TO stream_seconds_default_pkey")
    op.execute("""
        CREATE TABLE stream_seconds (
            bed VARCHAR(128) NOT NULL,
            second BIGINT NOT NULL,
            vals BYTEA NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            above BOOLEAN NOT NULL,
            technical BOOLEAN NOT NULL,
            alarm BOOLEAN NOT NULL,
            top_signals TEXT,
            scored_at DOUBLE PRECISION NOT NULL,
            CONSTRAINT stream_seconds_pkey PRIMARY KEY (bed, second)
        ) PARTITION BY RANGE (second)""")
    op.execute("ALTER TABLE stream_seconds ATTACH PARTITION stream_seconds_default DEFAULT")
