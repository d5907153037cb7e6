"""Advisory episodes in the stream store (issue #40): `stream_episodes.kind`, the bedside rule kind an advisory warns
of ('' for an alarm or a technical condition, which are not per kind), and the episode's key (bed, start, kind): an
advisory and an alarm may start at the same second, as may two advisories of different kinds.

Revision ID: 0005
Revises: 0004
"""

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: sqlite cannot change a primary key in place (the table is copied); PostgreSQL alters it
    with op.batch_alter_table("stream_episodes", recreate="auto") as batch:
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default=""))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.drop_constraint("stream_episodes_pkey", "stream_episodes", type_="primary")
        op.create_primary_key("stream_episodes_pkey", "stream_episodes", ["bed", "start", "kind"])
    else:
        with warnings.catch_warnings():  # the copied table's reflected key (bed, start) is replaced on purpose
            warnings.filterwarnings("ignore", message=".*specifies columns .* as primary_key=True")
            with op.batch_alter_table("stream_episodes", recreate="always") as batch:
                batch.create_primary_key("stream_episodes_pkey", ["bed", "start", "kind"])


def downgrade() -> None:
    op.execute("DELETE FROM stream_episodes WHERE kind <> ''")
    with op.batch_alter_table("stream_episodes", recreate="always") as batch:
        batch.drop_column("kind")
        batch.create_primary_key("stream_episodes_pkey", ["bed", "start"])
