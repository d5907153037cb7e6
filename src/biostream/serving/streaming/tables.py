"""The stream store's tables (`biostream.serving.streaming.store`; their migrations: `biostream.serving.database`):
each bed's state, every scored second, every episode (alarms, technical conditions, advisories), and the Redis
path's outbox."""

from __future__ import annotations

import sqlalchemy as sa

META = sa.MetaData()
BEDS = sa.Table(
    "stream_beds", META,
    sa.Column("bed", sa.String(128), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),  # +1 per write: a cached state older than this is stale
    sa.Column("last_second", sa.BigInteger),  # the newest scored second; null: no recording (new, or went silent)
    sa.Column("last_arrival", sa.Float),  # wall clock of the bed's last message (the silent-bed timeout)
    sa.Column("state", sa.Text),  # the alarm policy's state (BedAlarms.to_dict), JSON
    sa.Column("refused_since", sa.BigInteger),  # the start of its open condition "no valid data"; null: none
)
SECONDS = sa.Table(
    "stream_seconds", META,
    sa.Column("bed", sa.String(128), primary_key=True),
    sa.Column("second", sa.BigInteger, primary_key=True),  # seconds since the epoch (UTC)
    sa.Column("vals", sa.LargeBinary, nullable=False),  # the signals' values, float64, NaN = missing
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("above", sa.Boolean, nullable=False),
    sa.Column("technical", sa.Boolean, nullable=False),
    sa.Column("alarm", sa.Boolean, nullable=False),  # the k-of-n rule was on (before the refractory merge)
    sa.Column("top_signals", sa.Text),  # JSON list, for an alarm second
    sa.Column("scored_at", sa.Float, nullable=False),  # wall clock of the commit's batch
)
EPISODES = sa.Table(
    "stream_episodes", META,
    sa.Column("bed", sa.String(128), primary_key=True),
    sa.Column("start", sa.BigInteger, primary_key=True),
    # the rule kind an advisory warns of; '' for an alarm or a technical condition (migration 0005)
    sa.Column("kind", sa.String(32), primary_key=True, server_default=""),
    sa.Column("end", sa.BigInteger),  # exclusive; null while open
    sa.Column("last_on", sa.BigInteger, nullable=False),
    sa.Column("alarm_class", sa.String(16), nullable=False),
    sa.Column("peak_second", sa.BigInteger),
    sa.Column("peak_score", sa.Float),
    sa.Column("signals", sa.Text),  # JSON list
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("closed_at", sa.Float),
    sa.Column("acked_at", sa.Float),  # when a clinician acknowledged it (POST /beds/<bed>/episodes/<start>/ack)
    sa.Column("acked_by", sa.String(12)),  # the key id that did
    sa.Column("model_version", sa.String(64)),  # the registered version of the model that opened it
    sa.Column("reason", sa.String(200)),  # a condition not read from the signals ("no valid data from this bed: ...")
    sa.Column("acked_peak", sa.Float),  # its peak score when acknowledged: a worsening beyond it alarms again
    sa.Column("realarmed_at", sa.Float),  # when an acknowledgement stopped holding (it alarmed again)
    sa.Column("realarm_why", sa.String(16)),  # lapsed (stream.ack_silence_s) or worsened (stream.ack_worsening)
)
sa.Index("stream_episodes_open", EPISODES.c.end)
ACK_COLUMNS = ("acked_at", "acked_by", "acked_peak", "realarmed_at", "realarm_why")  # the acknowledgement's
EPISODE_COLUMNS = [c.name for c in EPISODES.c if c.name not in ACK_COLUMNS]  # what the engine writes
OUTBOX = sa.Table(  # a batch's result message, written in its commit, deleted once published (the Redis path)
    "stream_outbox", META,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("created_at", sa.Float, nullable=False),  # wall clock of the commit's batch
    sa.Column("message", sa.Text, nullable=False),
)
SECONDS_COLUMNS = [c.name for c in SECONDS.c]  # the order of a stored second's row
_PG_SECONDS = ["text", "int8", "bytea", "float8", "bool", "bool", "bool", "text", "float8"]  # PostgreSQL's types
