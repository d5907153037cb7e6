"""Bedside streams: a monitor gateway sends each bed's newest seconds; every new second is scored with the
bed's history, under the alarm policy, and stored (`engine`, `policy`, `store`, `messages`, `answers`; the
Redis scale path in `redis_path`). Importing this package loads nothing heavy."""
