"""No silent refusal, acknowledgements that lapse, gateway keys tied to beds (issue #39).

- `stream_beds.refused_since`: the start of the bed's open technical condition "no valid data" (the service
  refuses what a gateway sends for it), null while its data is read; `stream_episodes.reason`: such a condition's
  words (null for an episode read from the signals).
- `stream_episodes.acked_peak`: the episode's peak score when it was acknowledged (a worsening beyond it alarms
  again); `realarmed_at`, `realarm_why` ('lapsed' or 'worsened'): when and why an acknowledgement stopped holding.
- `api_keys.beds`: the bed-id prefixes a gateway key may write (null: any bed).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("stream_beds", sa.Column("refused_since", sa.BigInteger))
    op.add_column("stream_episodes", sa.Column("reason", sa.String(200)))
    op.add_column("stream_episodes", sa.Column("acked_peak", sa.Float))
    op.add_column("stream_episodes", sa.Column("realarmed_at", sa.Float))
    op.add_column("stream_episodes", sa.Column("realarm_why", sa.String(16)))
    op.add_column("api_keys", sa.Column("beds", sa.String(200)))
