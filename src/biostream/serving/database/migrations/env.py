"""Alembic's environment for the stream store: the connection is the one `biostream.serving.database.migrate` opened
(and holds in a transaction), so a migration runs inside its caller's transaction and lock."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():  # a no-op inside the caller's transaction
    context.run_migrations()
