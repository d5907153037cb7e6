"""The stream store's database (beds, scored seconds, episodes, outbox, keys, audit): its schema, made and changed
by Alembic migrations (`migrate`), and its retention (`retention`)."""
