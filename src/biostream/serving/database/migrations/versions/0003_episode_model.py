"""Which model opened each alarm episode (its registered version): the bed page and the case report name it, and a
store outlives a model. Episodes stored before have none (null: "not recorded").

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stream_episodes", sa.Column("model_version", sa.String(64)))
