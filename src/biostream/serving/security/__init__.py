"""Who may read and write patient data: API keys with a role (`keys`), the append-only audit trail (`audit`), the
ASGI guard in front of every endpoint (`guard`) and the `biostream keys` / `biostream audit` commands (`cli`).
docs/security.md."""
